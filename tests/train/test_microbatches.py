"""train.microbatches: gradient accumulation trains the numbers of one large batch."""

import jax
import numpy as np
import pytest
from jitted_steps import small_config, train_steps

from llama_adv.config.validate import validate_config
from llama_adv.errors import UserError
from llama_adv.train.microbatches import combine_metrics, split

STEPS = 6


def _train(config, microbatches: int):
    """Per-step losses and the final state (on the host) of ``STEPS`` jitted steps."""
    losses, state = train_steps(config, STEPS, seed=3, microbatches=microbatches)
    return losses, jax.device_get(state)


def _assert_same_run(a, b):
    (losses_a, state_a), (losses_b, state_b) = a, b
    assert losses_a[0] != losses_a[-1]  # it trains
    np.testing.assert_allclose(losses_b, losses_a, rtol=1e-5, atol=1e-5)
    for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


# freelb draws a random start and smart/vat random probes (per example row, so a
# microbatch draws its rows' noise); adaptive keeps per-example radii; smart a teacher.
@pytest.mark.parametrize("method", ["none", "fgm", "freelb", "adaptive", "smart", "vat"])
def test_four_microbatches_train_like_one_batch(quickstart_config, method):
    # SMART's first ascent direction at its sigma 1e-5 (VAT's at xi 1e-6) is the direction
    # of a ~1e-10 KL gradient, which float32 summation order decides
    # (tests/train/test_mesh.py); from 1e-2 it is the gradient's own.
    overrides = {"smart": ("adv.init_magnitude=0.01",), "vat": ("adv.vat.xi=0.01",)}
    config = small_config(quickstart_config, method, *overrides.get(method, ()))
    _assert_same_run(_train(config, 1), _train(config, 4))


def test_microbatches_on_a_data_parallel_mesh(quickstart_config):
    config = small_config(quickstart_config, "freelb", devices=2, mesh={"data": 2})
    _assert_same_run(_train(config, 1), _train(config, 2))


def test_split_interleaves_rows_and_metrics_combine_by_kind():
    batch = {"x": np.arange(12).reshape(6, 2)}
    parts, rows = split(batch, 3)
    assert parts["x"].shape == (3, 2, 2)
    np.testing.assert_array_equal(rows, [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_array_equal(parts["x"][1], batch["x"][[1, 4]])
    stacked = {
        "loss": np.array([1.0, 2.0]),
        "perturbation_norm_max": np.array([3.0, 1.0]),
        "radius_min": np.array([3.0, 1.0]),
        "flip_rate": np.array([0.5, 1.0]),
    }
    combined = combine_metrics(stacked)
    assert combined == {
        "loss": 3.0, "perturbation_norm_max": 3.0, "radius_min": 1.0, "flip_rate": 0.75
    }  # fmt: skip


@pytest.mark.parametrize(
    "method, overrides, message",
    [
        ("freeat", ("train.microbatches=2",), "does not work with adv.method='freeat'"),
        ("none", ("train.microbatches=3",), "must divide train.batch_size=8"),
    ],
)
def test_bad_microbatches_are_refused_with_the_config(
    quickstart_config, method, overrides, message
):
    config = small_config(quickstart_config, method, *overrides)
    with pytest.raises(UserError, match=message):
        validate_config(config)


def test_microbatches_that_do_not_split_the_devices_rows_are_refused(quickstart_config):
    config = small_config(quickstart_config, "none", devices=4, mesh={"data": 4})
    with pytest.raises(UserError, match="multiple of 16"):  # 4 microbatches x 4 shards
        _train(config, 4)
