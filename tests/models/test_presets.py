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


def _abstract_params(config, vocab_size=32000, head="lm", num_classes=0):
    model = build_model(config, head=head, vocab_size=vocab_size, num_classes=num_classes)
    tokens = jnp.ones((1, 8), jnp.int32)
    batch = (
        {"inputs": tokens}
        if config.name == "decoder" or head == "classification"
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


@pytest.mark.parametrize(
    "name,pooling",
    [("decoder", "auto"), ("encoder_decoder", "auto"), ("encoder_decoder", "label_words")],
)
def test_classification_matmul_params_match_the_parameter_tree(name, pooling):
    # A classifier's head is its d_model x num_classes kernel; label_words reads the (tied)
    # LM projection of the decoder; mean pooling builds no decoder.
    config = _section(name, "small")
    config.classifier_pooling = pooling
    config.label_token_ids = (5, 6, 7)
    params = _abstract_params(config, head="classification", num_classes=3)
    kernels = sum(
        leaf.size
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if path[-1].key == "kernel"
    )
    parts = matmul_params(config, 32000, head="classification", num_classes=3)
    if pooling == "label_words":
        assert parts["head"] == 32000 * 256
        assert parts["encoder"] + parts["decoder"] == kernels
    else:
        assert parts["head"] == 3 * 256
        assert sum(parts.values()) == kernels
    if name == "encoder_decoder" and pooling == "auto":
        assert parts["decoder"] == 0


def test_decoder_classification_flops_count_the_classifier_not_the_lm_head():
    # The SST-2-sized benchmark shape (issue 13): d_model 256, 4 blocks of 4 heads, d_ff
    # 688, vocabulary 8192, 2 classes, batch 32 x 64 tokens. The classifier reads one
    # token per example; no vocabulary-sized projection is computed.
    d, layers, ff, vocab, classes, t, b = 256, 4, 688, 8192, 2, 64, 32
    config = get_default_config().model
    config.d_model, config.num_layers, config.num_heads, config.d_ff = d, layers, 4, ff
    # Forward matmul FLOPs of one example, 2 per multiply-add:
    projections = 4 * 2 * t * d * d  # q, k, v, out: [T, d] x [d, d]
    mlp = 3 * 2 * t * d * ff  # gate, up: [T, d] x [d, ff]; down: [T, ff] x [ff, d]
    scores = 2 * 2 * t * t * d  # QK^T and AV over all heads: [T, A] x [A, T], [T, T] x [T, A]
    classifier = 2 * d * classes  # [1, d] x [d, C] on the readout token
    forward = layers * (projections + mlp + scores) + classifier
    expected = 3 * forward * b  # backward = 2 forwards (input and weight gradients)
    step = flops_per_token(config, t, vocab, head="classification", num_classes=classes) * t * b
    assert step == pytest.approx(expected, rel=1e-12)
    assert step == pytest.approx(40.47e9, rel=1e-3)  # the issue's ~40.5 GFLOP per step
    # The LM-head count (the old default) adds a d x vocab projection on every token: 66 G.
    lm = flops_per_token(config, t, vocab) * t * b
    assert lm - step == pytest.approx(6 * d * vocab * t * b - 6 * d * classes * b)
    assert lm == pytest.approx(66.24e9, rel=1e-3)


def test_encoder_decoder_classification_flops():
    config = _section("encoder_decoder", "small")  # d 256, 4 + 4 blocks, A 256, d_ff 640
    s, d, a, ff, classes = 64, 256, 256, 640, 3
    encoder = 4 * (6 * s * (4 * d * a + 3 * d * ff) + 12 * a * s * s)
    mean = flops_per_token(config, s, 32000, head="classification", num_classes=classes)
    assert mean == pytest.approx((encoder + 6 * d * classes) / s)
    # label_words: the decoder on one start token (cross-attention keys and values from
    # the S encoder outputs) and the 32,000-way LM head on it.
    config.classifier_pooling = "label_words"
    decoder = 4 * (6 * (6 * d * a + 3 * d * ff) + 6 * s * 2 * d * a + 12 * a * (1 + s))
    words = flops_per_token(config, s, 32000, head="classification", num_classes=classes)
    assert words == pytest.approx((encoder + decoder + 6 * d * 32000) / s)


def test_flops_per_token_rejects_a_classifier_without_classes():
    with pytest.raises(ValueError, match="num_classes"):
        flops_per_token(_section("decoder", "small"), 64, head="classification")
