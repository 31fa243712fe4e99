"""Named presets and the FLOPs-per-token formula."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from llama_adv.config import get_default_config
from llama_adv.errors import UserError
from llama_adv.models import build_model, count_params, flops_per_token
from llama_adv.models.presets import apply_preset, matmul_params

COUNTS = {
    ("decoder", "small"): 13_012_224,
    ("decoder", "base"): 123_685_632,
    ("decoder", "large"): 990_455_808,
    ("encoder_decoder", "small"): 15_275_776,
    ("encoder_decoder", "medium"): 347_395_072,
}


def _section(name: str, preset: str):
    config = get_default_config().model
    config.name, config.preset = name, preset
    return config


def _abstract_params(config, vocab_size=32000):
    model = build_model(config, head="lm", vocab_size=vocab_size, num_classes=0)
    tokens = jnp.ones((1, 8), jnp.int32)
    batch = (
        {"inputs": tokens}
        if config.name == "decoder"
        else {"encoder_inputs": tokens, "decoder_inputs": tokens}
    )
    return jax.eval_shape(model.init, jax.random.key(0), batch)


@pytest.mark.parametrize("name,preset", sorted(COUNTS))
def test_build_model_applies_preset(name, preset):
    assert count_params(_abstract_params(_section(name, preset))) == COUNTS[(name, preset)]


def test_preset_overrides_only_size_fields():
    config = _section("decoder", "base")
    config.dropout_rate = 0.3
    applied = apply_preset(config)
    assert (applied.d_model, applied.num_layers, applied.dropout_rate) == (768, 12, 0.3)
    assert config.d_model == 64  # the input section is not modified


def test_unknown_preset_is_a_user_error():
    with pytest.raises(UserError, match=r"model\.preset"):
        apply_preset(_section("decoder", "huge"))


@pytest.mark.parametrize("name", ["decoder", "encoder_decoder"])
def test_matmul_params_match_the_parameter_tree(name):
    # Everything but embeddings, norms, relative-bias tables is a matmul weight; with a
    # tied head the head's matmul is the embedding table.
    config = _section(name, "small")
    params = _abstract_params(config)
    flat = jax.tree_util.tree_leaves_with_path(params)
    dense = sum(
        leaf.size
        for path, leaf in flat
        if path[-1].key == "kernel" and "classifier" not in str(path)
    )
    parts = matmul_params(config, 32000)
    assert parts["encoder"] + parts["decoder"] == dense
    assert parts["head"] == 32000 * 256


def test_flops_per_token_formula():
    config = _section("decoder", "small")
    n = sum(matmul_params(config, 32000).values())
    assert flops_per_token(config, 128) == 6 * n + 12 * 6 * 256 * 128
    # Attention grows with length, the 6N term does not.
    longer = flops_per_token(config, 256) - flops_per_token(config, 128)
    assert longer == 12 * 6 * 256 * 128
    ed = _section("encoder_decoder", "small")
    parts = matmul_params(ed, 32000)
    expected = (
        6 * (parts["encoder"] + parts["decoder"] + parts["head"]) * 64
        + 12 * 256 * (4 * 64 * 64 + 4 * (64 * 64 + 64 * 64))
    ) / 128
    assert flops_per_token(ed, 64) == pytest.approx(expected)
