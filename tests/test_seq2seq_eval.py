"""Corpus BLEU of greedy decodes in evaluation (seq2seq): padding, references, sharding.

A trained run's evaluations logging BLEU: tests/robustness/test_seq2seq_suite.py."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tiny_runs import SEQ2SEQ

from llama_adv.config import load_config
from llama_adv.data.bleu import bleu_from_ids, split_references
from llama_adv.data.pipeline import eval_batches
from llama_adv.models.decoding import generate_seq2seq
from llama_adv.train.evaluate import corpus_bleu_of, evaluate, make_eval_step
from llama_adv.train.mesh import make_mesh, replicated, to_global
from llama_adv.train.setup import build_experiment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reverse():
    """The tiny seq2seq experiment (encoder-decoder on synthetic_reverse), fresh params."""
    config = load_config(f"{REPO / 'configs' / 'quickstart.py'}:tiny", SEQ2SEQ)
    exp = build_experiment(config)
    mesh = make_mesh()
    split = exp.dataset.split("validation")
    params = exp.model.init(jax.random.key(0), split.take(np.arange(4)))
    return config, exp, mesh, split, jax.device_put(params, replicated(mesh))


def test_synthetic_references_are_the_decoded_targets(reverse):
    _, exp, _, split, _ = reverse
    assert split.references is None and split.tokenizer is exp.dataset.tokenizer
    refs = split_references(split, split.tokenizer)
    assert refs == [" ".join(reversed(t.split())) for t in split.texts]


def test_a_perfect_decode_scores_100_and_padding_rows_are_dropped(reverse):
    _, _, mesh, split, _ = reverse
    decoded = []
    for batch in eval_batches(split, 32):  # 40 examples: the second batch has 24 padding rows
        junk = np.where(batch["weight"][:, None] > 0, batch["targets"], 7)  # counts if kept
        arrays = to_global({**batch, "targets": junk}, mesh)
        decoded.append((arrays["targets"], arrays["weight"], arrays["example_id"]))
    assert corpus_bleu_of(decoded, split) == pytest.approx(100.0)
    wrong = to_global({"t": np.full((32, 8), 7, np.int32)}, mesh)["t"]
    decoded[0] = (wrong, *decoded[0][1:])  # a wrong decode of 32 of the 40 examples
    assert corpus_bleu_of(decoded, split) < 50


def test_evaluation_bleu_equals_that_of_unsharded_greedy_decodes(reverse):
    config, exp, mesh, split, params = reverse
    eval_step = make_eval_step(exp.model, exp.task, config.eval.attack)
    results = evaluate(eval_step, params, split, mesh, config.eval, jax.random.key(0))

    # One device, the whole split in one batch, the public decoding API.
    host_params = jax.device_get(params)
    greedy = jax.jit(lambda p, x: generate_seq2seq(exp.model, p, x, 8)[0])
    tokens = greedy(host_params, jnp.asarray(split.arrays["encoder_inputs"]))
    refs = split_references(split, split.tokenizer)
    assert results["bleu"] == pytest.approx(bleu_from_ids(split.tokenizer, tokens, refs))
    # The evaluation's decodes, batch by batch on the 4-device mesh, are the same tokens.
    batch = to_global(next(eval_batches(split, 32)), mesh)
    sharded = eval_step.decode(params, batch, max_new_tokens=8, start_id=1, eos_id=2)
    np.testing.assert_array_equal(jax.device_get(sharded), np.asarray(tokens)[:32])

    off = config.eval.copy_and_resolve_references()
    off.bleu = False
    assert "bleu" not in evaluate(eval_step, params, split, mesh, off, jax.random.key(0))


def test_decoder_only_seq2seq_says_why_there_is_no_bleu(quickstart_config, capsys):
    config = quickstart_config("tiny", *SEQ2SEQ, "model.name=decoder")
    exp = build_experiment(config)
    mesh = make_mesh()
    split = exp.dataset.split("validation")
    params = jax.device_put(exp.model.init(jax.random.key(0), split.take(np.arange(4))),
                            replicated(mesh))  # fmt: skip
    step = make_eval_step(exp.model, exp.task, config.eval.attack)
    results = evaluate(step, params, split, mesh, config.eval, jax.random.key(0))
    assert "bleu" not in results and np.isfinite(results["loss"])
    assert "no bleu: greedy decoding for BLEU needs model.name=encoder_decoder" in (
        capsys.readouterr().out
    )
