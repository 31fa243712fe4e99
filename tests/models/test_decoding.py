"""Cached decoding equals the full forward pass; beam search with one beam is greedy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _model_helpers import init, make, padded

from llama_adv.models.decoding import beam_search, generate_decoder, generate_seq2seq


@pytest.mark.parametrize("scan", [False, True])
def test_decoder_cache_matches_full_forward(lm_batch, scan):
    model = make("decoder", num_kv_heads=2, scan_layers=scan)
    params = init(model, lm_batch)
    prompts = lm_batch["inputs"]  # right-padded, lengths 8, 5, 2
    tokens, logits = generate_decoder(model, params, prompts, 5, eos_id=-1)
    full = model.apply(params, {"inputs": jnp.concatenate([prompts, tokens], axis=1)})["logits"]
    last = jnp.sum(prompts != 0, axis=1) - 1
    np.testing.assert_allclose(logits[:, 0], full[jnp.arange(3), last], atol=1e-5)
    # A generated padding id is masked in both passes; its own query row is not compared.
    fed = np.asarray(tokens[:, :-1] != 0)
    np.testing.assert_allclose(logits[:, 1:][fed], full[:, 8:12][fed], atol=1e-5)
    np.testing.assert_array_equal(tokens, jnp.argmax(logits, axis=-1))


@pytest.mark.parametrize("scan", [False, True])
def test_seq2seq_cache_matches_full_forward(seq2seq_batch, scan):
    model = make("encoder_decoder", scan_layers=scan)
    params = init(model, seq2seq_batch)
    source = seq2seq_batch["encoder_inputs"]
    tokens, logits = generate_seq2seq(model, params, source, 6, eos_id=-1)
    decoder_inputs = jnp.concatenate([jnp.ones((2, 1), jnp.int32), tokens[:, :-1]], axis=1)
    full = model.apply(params, {"encoder_inputs": source, "decoder_inputs": decoder_inputs})
    np.testing.assert_allclose(logits, full["logits"], atol=1e-5)


def test_sampling_respects_top_k(seq2seq_batch):
    model = make("encoder_decoder")
    params = init(model, seq2seq_batch)
    source = seq2seq_batch["encoder_inputs"]
    tokens, logits = generate_seq2seq(
        model, params, source, 6, temperature=1.0, top_k=2, rng=jax.random.key(3), eos_id=-1
    )
    top2 = jax.lax.top_k(logits, 2)[1]
    assert bool(jnp.all(jnp.any(top2 == tokens[..., None], axis=-1)))
    other, _ = generate_seq2seq(model, params, source, 6, temperature=1.0,
                                rng=jax.random.key(4), eos_id=-1)  # fmt: skip
    greedy, _ = generate_seq2seq(model, params, source, 6, eos_id=-1)
    assert not (np.array_equal(other, greedy) and np.array_equal(tokens, greedy))


@pytest.mark.parametrize("scan", [False, True])
def test_beam_one_is_greedy_and_wider_beams_score_higher(scan):
    model = make("encoder_decoder", scan_layers=scan)
    source = padded(np.random.default_rng(5), [7, 3, 5], 7)
    params = init(model, {"encoder_inputs": source, "decoder_inputs": source[:, :2]})
    greedy, logits = generate_seq2seq(model, params, source, 6, eos_id=4)
    beam, score = beam_search(model, params, source, 6, 1, eos_id=4)
    np.testing.assert_array_equal(beam, greedy)
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits), greedy[..., None], axis=-1)[..., 0]
    alive = jnp.cumsum(greedy == 4, axis=1) - (greedy == 4) == 0  # up to and with EOS
    np.testing.assert_allclose(score, jnp.sum(picked * alive, axis=1), atol=1e-4)
    _, wide = beam_search(model, params, source, 6, 4, eos_id=4)
    assert bool(jnp.all(wide >= score - 1e-5))
