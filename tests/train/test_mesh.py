"""The data x fsdp x tensor mesh: any mesh trains the same numbers, and the state really is
split the way the logical axis rules say."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec
from jitted_steps import small_config, train_steps

from llama_adv.errors import UserError
from llama_adv.train.mesh import mesh_shape
from llama_adv.train.partitioning import logical_axes
from llama_adv.train.setup import build_experiment

STEPS = 20
MESHES = {
    "1 device": (1, {"data": 1}),
    "data=4": (4, {"data": 4}),
    "fsdp=4": (4, {"data": 1, "fsdp": 4}),
    "data=2,tensor=2": (4, {"data": 2, "tensor": 2}),
}


def _config(quickstart_config, method: str, devices: int, sizes: dict):
    # At the paper's sigma 1e-5 SMART's first ascent direction is g / max|g| of a KL
    # gradient of order 1e-10, which float32 summation order decides (any two meshes part
    # after a few steps, by ~1e-4); from sigma 1e-2 the direction is the gradient's own.
    smart = ("adv.init_magnitude=0.01",) if method == "smart" else ()
    return small_config(quickstart_config, method, *smart, devices=devices, mesh=sizes)


def _train(config):
    """Per-step losses of ``STEPS`` steps of the real jitted step, and the final state."""
    return train_steps(config, STEPS, seed=7)


@pytest.mark.parametrize("method", ["none", "fgm", "freelb", "smart"])
def test_every_mesh_trains_the_same_losses(quickstart_config, method):
    losses = {name: _train(_config(quickstart_config, method, *mesh))[0]
              for name, mesh in MESHES.items()}  # fmt: skip
    reference = losses["1 device"]
    assert np.all(np.isfinite(reference))
    assert reference[0] != reference[-1]  # it trains
    for name, values in losses.items():
        np.testing.assert_allclose(values, reference, rtol=1e-5, atol=1e-5, err_msg=name)


def test_fsdp_and_tensor_split_parameters_optimizer_and_method_state(quickstart_config):
    config = _config(quickstart_config, "smart", 4, {"data": 1, "fsdp": 2, "tensor": 2})
    _, state = _train(config)
    params = state.params
    embedding = params["embedding"]["embedding"]  # [vocab, d_model]
    query = params["block_0"]["attention"]["query"]["kernel"]  # [d_model, heads, head_dim]
    down = params["block_0"]["mlp"]["down"]["kernel"]  # [d_ff, d_model]
    vocab_axis = "tensor" if embedding.shape[0] % 2 == 0 else None  # undivided: whole
    assert embedding.sharding.spec == PartitionSpec(vocab_axis, "fsdp")
    assert query.sharding.spec == PartitionSpec("fsdp", "tensor", None)
    assert down.sharding.spec == PartitionSpec("tensor", "fsdp")
    # Each device holds a quarter of the query kernel.
    assert query.addressable_shards[0].data.size == query.size // 4
    # Adam's moments and SMART's teacher follow the parameters they mirror.
    moments = [s for s in jax.tree.leaves(state.opt_state) if s.shape == query.shape]
    assert len(moments) >= 2 and all(m.sharding.spec == query.sharding.spec for m in moments)
    teacher = [s for s in jax.tree.leaves(state.method_state) if s.shape == query.shape]
    assert teacher and all(t.sharding.spec == query.sharding.spec for t in teacher)


def test_logical_axes_of_stacked_and_unknown_leaves():
    key = jax.tree_util.DictKey
    path = (key("blocks"), key("mlp"), key("gate"), key("kernel"))
    assert logical_axes(path, 3) == ("layers", "embed", "mlp")
    assert logical_axes((key("something"), key("kernel")), 2) == (None, None)


@pytest.mark.parametrize(
    "sizes, devices, message",
    [
        ({"data": 3}, 4, "needs 3 devices but the run has 4"),
        ({"data": -1, "fsdp": -1}, 4, "at most one mesh axis"),
        ({"data": -1, "tensor": 3}, 4, "not a multiple of 3"),
        ({"fsdp": 0}, 4, "mesh.fsdp=0 is invalid"),
    ],
)
def test_bad_mesh_sizes_name_the_field(sizes, devices, message):
    with pytest.raises(UserError, match=message):
        mesh_shape(sizes, devices)


def test_batch_the_batch_axes_do_not_divide(quickstart_config):
    config = _config(quickstart_config, "none", 4, {"data": 2, "fsdp": 2})
    config.train.batch_size = 6
    with pytest.raises(UserError, match=r"train.batch_size=6 is not divisible by the 4 devices"):
        build_experiment(config)
    config = _config(quickstart_config, "none", 4, {"data": 2, "tensor": 2})
    config.train.batch_size = 6
    build_experiment(config)  # 6 splits over data=2 (tensor does not cut the batch)
