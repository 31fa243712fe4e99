"""Latent streams ``layer:N`` (the residual stream after block N): where the perturbation
lands, scanned = unrolled, the masks, bad names, and training through the loop."""

import functools
import json
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
from _model_helpers import make, padded

from llama_adv.adversarial import select_streams
from llama_adv.cli import main
from llama_adv.errors import UserError
from llama_adv.models.latent import LatentStreams, with_latent_streams
from llama_adv.models.layers import stack_blocks
from llama_adv.train import train_and_evaluate

DEPTH = 3
# (model name, the stack the latents live in: module path prefix)
MODELS = [("decoder", ()), ("encoder_decoder", ("encoder",))]


@functools.cache  # one initialisation per model for the whole module
def _setup(name: str):
    rng = np.random.default_rng(0)
    model = make(name, num_layers=DEPTH, num_decoder_layers=1)
    if name == "decoder":
        batch = {"inputs": padded(rng, [6, 8, 3], 8)}
    else:
        batch = {"encoder_inputs": padded(rng, [6, 8, 3], 8),
                 "decoder_inputs": padded(rng, [4, 5, 2], 5)}  # fmt: skip
    return model, batch, jax.jit(model.init)(jax.random.key(0), batch)  # jitted: faster


def _delta(view, params, batch, stream, seed=1):
    shape = jax.eval_shape(view.embed, params, batch)[stream].shape
    return jax.random.normal(jax.random.key(seed), shape)


def _run(view, params, batch, delta):
    """Logits with ``delta`` ``{stream: [B, L, D]}`` added to the streams of ``view``."""
    embedded = view.embed(params, batch)
    embedded = {k: v + delta[k] if k in delta else v for k, v in embedded.items()}
    return view.apply_embedded(params, embedded, batch)["logits"]


@pytest.mark.parametrize("name,stack", MODELS)
def test_layer_n_is_the_output_of_block_n_as_lat_perturbs_it(name, stack):
    """``layer:1`` = adding the perturbation to block 1's MLP output (LAT's hook on
    ``model.layers.1.mlp``); block outputs up to block 1 stay, block 2 and logits move."""
    model, batch, params = _setup(name)
    view = LatentStreams(model, ("layer:1",))
    delta = _delta(view, params, batch, "layer:1")

    @jax.jit
    def forward(delta):
        """(clean, latent, hooked) logits and the block outputs of each run."""
        blocks, hook = {}, {"on": False}

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            path = context.module.path
            if context.method_name != "__call__":
                return out
            if path == (*stack, "block_1", "mlp") and hook["on"]:  # LAT's adversary
                out = out + delta
            if len(path) == len(stack) + 1 and path[:-1] == stack and "block_" in path[-1]:
                blocks.setdefault(hook["run"], {})[path[-1]] = out
            return out

        with nn.intercept_methods(record):
            hook["run"] = "clean"
            clean = model.apply(params, batch)["logits"]
            hook["run"] = "latent"
            latent = _run(view, params, batch, {"layer:1": delta})
            hook["run"], hook["on"] = "hooked", True
            hooked = model.apply(params, batch)["logits"]
        return clean, latent, hooked, blocks

    clean, latent, hooked, blocks = forward(delta)
    for block in ("block_0", "block_1"):  # up to the perturbation: unchanged
        np.testing.assert_array_equal(blocks["latent"][block], blocks["clean"][block])
    assert not np.allclose(blocks["latent"]["block_2"], blocks["clean"]["block_2"])
    assert np.abs(latent - clean).max() > 1e-3
    np.testing.assert_allclose(latent, hooked, atol=1e-5)


def _stacked(name: str, params: dict) -> dict:
    """Unrolled parameters in the layout of ``scan_layers=True``."""
    if name == "decoder":
        return stack_blocks(params, DEPTH)
    return {**params, "encoder": stack_blocks(params["encoder"], DEPTH),
            "decoder": stack_blocks(params["decoder"], 1)}  # fmt: skip


@pytest.mark.parametrize("name", [m for m, _ in MODELS])
def test_scanned_and_rematerialised_stacks_match_unrolled(name):
    """Several streams at once (embeddings, first and last block): same logits and
    gradients (to the perturbations and the parameters) with scan_layers and remat."""
    model, batch, params = _setup(name)
    scanned = make(name, num_layers=DEPTH, num_decoder_layers=1, scan_layers=True, remat=True)
    names = (model.latent_source, "layer:0", f"layer:{DEPTH - 1}")
    views = [with_latent_streams(m, names) for m in (model, scanned)]
    delta = {k: _delta(views[0], params, batch, k, seed=i) for i, k in enumerate(names)}

    def loss(view, p, d):
        return jnp.sum(jnp.tanh(_run(view, p, batch, d)))

    grad = jax.jit(jax.value_and_grad(loss, argnums=(1, 2)), static_argnums=0)
    a, (gp_a, gd_a) = grad(views[0], params, delta)
    b, (gp_b, gd_b) = grad(views[1], _stacked(name, params), delta)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    for k in names:
        np.testing.assert_allclose(gd_a[k], gd_b[k], atol=1e-5)
        assert np.abs(gd_a[k]).max() > 0
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5),
                 _stacked(name, gp_a), gp_b)  # fmt: skip


def test_masks_and_tokens_are_those_of_the_token_positions():
    for name, source in (("decoder", "inputs"), ("encoder_decoder", "encoder")):
        model, batch, params = _setup(name)
        view = LatentStreams(model, ("layer:0", "layer:2"))
        assert view.streams == (*model.streams, "layer:0", "layer:2")
        assert view.latent_source == source
        for special in (False, True):
            masks = view.perturbable_mask(batch, perturb_special=special)
            base = model.perturbable_mask(batch, perturb_special=special)
            np.testing.assert_array_equal(masks["layer:2"], base[source])
        np.testing.assert_array_equal(view.stream_tokens(batch)["layer:0"],
                                      model.stream_tokens(batch)[source])  # fmt: skip
        embedded = view.embed(params, batch)
        assert embedded["layer:0"].shape == embedded[source].shape
        assert not np.any(embedded["layer:0"])


@pytest.mark.parametrize("entry", ["layer:3", "layer:-1", "layer:x", "layer:", "layer:1.5"])
def test_a_layer_outside_the_model_is_a_user_error_naming_the_range(entry):
    latent = tuple(f"layer:{i}" for i in range(DEPTH))
    with pytest.raises(UserError, match=r"adv\.streams=.*layer:0 to layer:2"):
        select_streams(f"inputs,{entry}", ("inputs",), latent)
    assert select_streams("inputs,layer:2,layer:0", ("inputs",), latent) == (
        "inputs", "layer:2", "layer:0")  # fmt: skip
    assert select_streams("all", ("inputs",), latent) == ("inputs",)  # latents only by name


def test_a_layer_beyond_the_depth_exits_2_through_the_cli(repo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repo)
    workdir = tmp_path / "run"
    status = main(["train", "--config", "configs/quickstart.py:tiny", "--workdir", str(workdir),
                   "--config.adv.method=fgm", "--config.adv.streams=inputs,layer:2"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    assert "'layer:2'" in err and "layer:0 to layer:1" in err, err
    assert not workdir.exists()


SMALL = ("model.d_model=32", "model.num_heads=2", "model.d_ff=64", "train.num_steps=2",
         "train.log_every=1", "train.progress_bar=False", "eval.max_examples=16",
         "eval.batch_size=16", "eval.attack.method=none")  # fmt: skip
SEQ2SEQ = ("model.name=encoder_decoder", "data.name=synthetic_reverse", "task.name=seq2seq",
           "data.max_length=8", "data.target_max_length=8", "checkpoint.best_metric=")  # fmt: skip


@pytest.mark.parametrize(
    "method,extra",
    [
        ("pgd", ("adv.streams=layer:1",)),
        # several streams, scanned and rematerialised, LoRA, FSDP-split weights
        ("fgm", ("adv.streams=inputs,layer:0,layer:1", "model.scan_layers=True",
                 "model.remat=True", "model.lora.rank=2", "mesh.fsdp=2")),
        # the encoder's residual stream; FreeAT carries it from batch to batch
        ("freeat", ("adv.streams=layer:0", *SEQ2SEQ)),
    ],
    ids=["pgd", "fgm-scan-lora-fsdp", "freeat-encdec"],
)  # fmt: skip
def test_training_perturbs_latent_streams(quickstart_config, tmp_path, method, extra):
    config = quickstart_config(f"tiny,method={method}", *SMALL, *extra)
    summary = train_and_evaluate(config, tmp_path)
    assert summary["step"] == 2
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["kind"] == "train"][-1]
    assert np.isfinite(last["loss"])
    assert last["perturbation_norm"] > 0
