"""``llama-adv generate`` and ``llama-adv evaluate`` on tiny trained runs: greedy generation
is the cached and the uncached argmax decode, sampling filters and seeds, the encoder-
decoder, evaluation equal to the training run's own, and one-line errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tiny_runs import LM, SEQ2SEQ, train_tiny, trained_once

from llama_adv.cli import main
from llama_adv.errors import UserError
from llama_adv.generation.generate import (
    Sampling,
    encode_prompts,
    generate_texts,
    make_generate_fn,
    until_eos,
)
from llama_adv.generation.prompts import format_prompt, read_prompts
from llama_adv.models.decoding import generate_decoder, generate_seq2seq, top_p_filter
from llama_adv.robustness.loading import load_run

PROMPTS = ["the movie was", "not good", "it is a very", "the acting"]


class NoEos:
    """The run's tokenizer with EOS switched off, so every decode runs its full length."""

    eos_id = -1

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    def once(name, *overrides):  # shared by the tests of both xdist workers
        return trained_once(
            tmp_path_factory, f"generate-{name}", lambda w: train_tiny(w, *overrides)
        )

    return {
        "classification": once("clf"),  # the quickstart's tiny run, PGD eval
        "lm": once("lm", *LM, "train.num_steps=4"),
        "seq2seq": once("s2s", *SEQ2SEQ, "train.num_steps=2"),
    }


@pytest.fixture(scope="module")
def lm(runs):
    return load_run(runs["lm"])


def _raw(run, sampling, prompts, tokenizer, seed=0):
    fn = make_generate_fn(run.exp.model, False, sampling, tokenizer)
    return np.asarray(fn(run.params, prompts, jax.random.key(seed)))


def test_greedy_is_the_cached_and_the_uncached_argmax_decode(lm):
    model, params, tok = lm.exp.model, jax.device_get(lm.params), NoEos(lm.exp.dataset.tokenizer)
    prompts = encode_prompts(lm.config, tok, PROMPTS)
    n = 6
    tokens = _raw(lm, Sampling(max_new_tokens=n), prompts, tok)
    cached = jax.jit(lambda p, x: generate_decoder(model, p, x, n, eos_id=-1)[0])(params, prompts)
    np.testing.assert_array_equal(tokens, cached)

    # Uncached: the full forward pass over prompt + tokens so far, argmax at the last one.
    lengths = (prompts != 0).sum(1)
    seqs = np.zeros((len(PROMPTS), prompts.shape[1] + n), np.int32)
    seqs[:, : prompts.shape[1]] = prompts
    forward = jax.jit(lambda p, x: model.apply(p, {"inputs": x})["logits"])
    for t in range(n):
        logits = np.asarray(forward(params, seqs))
        rows = np.arange(len(PROMPTS))
        seqs[rows, lengths + t] = logits[rows, lengths + t - 1].argmax(-1)
    uncached = np.stack([seqs[i, lengths[i] : lengths[i] + n] for i in range(len(PROMPTS))])
    np.testing.assert_array_equal(tokens, uncached)

    # The rows generate() returns: the same decode, cut at EOS; greedy is deterministic.
    real = lm.exp.dataset.tokenizer
    sampling = Sampling(max_new_tokens=n, batch_size=3)  # two batches, the last padded
    rows = generate_texts(model, lm.params, lm.config, real, PROMPTS, sampling)
    assert rows == generate_texts(model, lm.params, lm.config, real, PROMPTS, sampling)
    greedy = _raw(lm, Sampling(max_new_tokens=n), prompts, real)
    assert [r["tokens"] for r in rows] == [until_eos(g, real.eos_id)[0] for g in greedy]
    assert [r["prompt"] for r in rows] == PROMPTS
    assert all(r["generation"] == real.decode(r["tokens"]) for r in rows)


def test_near_zero_temperature_and_top_k_one_are_greedy(lm):
    tok = NoEos(lm.exp.dataset.tokenizer)
    prompts = encode_prompts(lm.config, tok, PROMPTS)
    greedy = _raw(lm, Sampling(max_new_tokens=6), prompts, tok)
    cold = _raw(lm, Sampling(max_new_tokens=6, temperature=1e-6), prompts, tok, seed=3)
    top1 = _raw(lm, Sampling(max_new_tokens=6, temperature=1.0, top_k=1), prompts, tok, seed=4)
    np.testing.assert_array_equal(cold, greedy)
    np.testing.assert_array_equal(top1, greedy)


def test_sampling_is_reproducible_with_a_seed(lm):
    tok = NoEos(lm.exp.dataset.tokenizer)
    prompts = encode_prompts(lm.config, tok, PROMPTS)
    hot = Sampling(max_new_tokens=8, temperature=1.0, top_p=0.9)
    first = _raw(lm, hot, prompts, tok, seed=1)
    np.testing.assert_array_equal(first, _raw(lm, hot, prompts, tok, seed=1))
    assert not np.array_equal(first, _raw(lm, hot, prompts, tok, seed=2))


def test_top_p_keeps_the_smallest_set_with_mass_p():
    rng = np.random.default_rng(0)
    for p in (0.05, 0.3, 0.5, 0.9, 0.99):
        logits = rng.normal(size=(16, 50)).astype(np.float32) * rng.uniform(0.5, 4)
        kept = np.isfinite(np.asarray(top_p_filter(jnp.asarray(logits), p)))
        probs = np.asarray(jax.nn.softmax(logits, axis=-1))
        for row, keep in zip(probs, kept, strict=True):
            order = np.argsort(-row)
            size = keep.sum()
            assert keep[order[:size]].all()  # the kept tokens are the likeliest
            assert row[order[:size]].sum() >= p - 1e-6  # with mass at least p
            assert row[order[: size - 1]].sum() < p + 1e-6  # and no smaller such set
    assert np.isfinite(np.asarray(top_p_filter(jnp.asarray(logits), 1.0))).all()


def test_encoder_decoder_generate(runs, tmp_path, capsys):
    run = load_run(runs["seq2seq"])
    tok, split = run.exp.dataset.tokenizer, run.exp.dataset.split("validation")
    # The prompt is laid out as the encoder inputs the run was trained on.
    ids = format_prompt(run.config, tok, split.texts[0])
    np.testing.assert_array_equal(ids, split.arrays["encoder_inputs"][0][: len(ids)])

    texts = split.texts[:3]
    out = tmp_path / "gen.jsonl"
    argv = ["generate", "--workdir", str(runs["seq2seq"]), "--max-new-tokens", "8", "--out",
            str(out)] + [a for t in texts for a in ("--prompt", t)]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == texts and f"output: {rows[0]['generation']}" in (
        capsys.readouterr().out
    )
    prompts = jnp.asarray(encode_prompts(run.config, tok, texts))
    greedy = jax.jit(lambda p, x: generate_seq2seq(
        run.exp.model, p, x, 8, start_id=tok.bos_id, eos_id=tok.eos_id)[0]
    )(jax.device_get(run.params), prompts)  # fmt: skip
    assert [r["tokens"] for r in rows] == [until_eos(g, tok.eos_id)[0] for g in np.asarray(greedy)]


def _eval_rows(workdir) -> dict[int, dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {r.pop("step"): r for r in map(json.loads, lines) if r.pop("kind") == "eval"}


@pytest.mark.parametrize("kind", ["classification", "lm"])
def test_evaluate_equals_the_final_evaluation(runs, kind, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--workdir", str(runs[kind]), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    summary = json.loads((runs[kind] / "summary.json").read_text())
    assert result["split"] == "validation" and result["step"] == summary["step"]
    assert result["eval"] == pytest.approx(summary["eval"], rel=1e-6)
    assert result["eval"] == pytest.approx(_eval_rows(runs[kind])[result["step"]], rel=1e-6)
    if kind == "classification":  # the evaluation attack's metrics are there too
        assert "attack_accuracy" in result["eval"]


def test_evaluate_on_a_file_equals_the_split_it_holds(runs, tmp_path):
    from llama_adv.data import load_dataset
    from llama_adv.evaluation import evaluate_run
    from llama_adv.robustness.loading import run_config

    workdir = runs["classification"]
    split = load_dataset(run_config(workdir).data).split("validation")
    path = tmp_path / "val.tsv"
    lines = [f"{t}\t{label}" for t, label in zip(split.texts, split.arrays["label"], strict=True)]
    path.write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")  # with a header
    on_file = evaluate_run(workdir, file=path)
    assert on_file["file"] == str(path)
    # The validation split's evaluation: the run's final one (the test above).
    summary = json.loads((workdir / "summary.json").read_text())
    assert on_file["eval"] == pytest.approx(summary["eval"], rel=1e-6)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_inputs_are_one_line_and_status_2(runs, tmp_path, capsys):
    clf, lm_dir = str(runs["classification"]), str(runs["lm"])
    line = _error(capsys, ["generate", "--workdir", clf, "--prompt", "good"])
    assert line.startswith(
        "llama-adv: error: generate needs a run with an LM head (task lm, seq2seq or chat); "
        f"{clf} is a classification run"
    )
    assert "no split 'nope'" in _error(capsys, ["evaluate", "--workdir", lm_dir, "--split", "nope"])
    missing = str(tmp_path / "missing.txt")
    assert "does not exist" in _error(capsys, ["evaluate", "--workdir", lm_dir, "--file", missing])
    assert "does not exist" in _error(
        capsys, ["generate", "--workdir", lm_dir, "--prompts-file", missing]
    )
    assert "needs prompts" in _error(capsys, ["generate", "--workdir", lm_dir])
    assert "--top-p" in _error(
        capsys, ["generate", "--workdir", lm_dir, "--prompt", "a", "--top-p", "0"]
    )


def test_prompts_file_lines_and_jsonl(tmp_path):
    lines = tmp_path / "p.txt"
    lines.write_text("first\n\nsecond\n")
    rows = tmp_path / "p.jsonl"
    rows.write_text('{"prompt": "a"}\n{"instruction": "b", "input": "c"}\n')
    assert read_prompts(["x"], lines) == ["x", "first", "second"]
    assert read_prompts(None, rows) == ["a", "b\n\nc"]
    rows.write_text('{"text": "a"}\n')
    with pytest.raises(UserError, match=r"p\.jsonl:1: expected an object"):
        read_prompts(None, rows)


def test_seq2seq_files_are_encoded_like_the_dataset(quickstart_config, tmp_path):
    from llama_adv.data import load_dataset
    from llama_adv.evaluation.files import split_from_file

    config = quickstart_config("tiny", *SEQ2SEQ)
    dataset = load_dataset(config.data)
    split = dataset.split("validation")
    sources = split.texts[:5]
    targets = [" ".join(reversed(t.split())) for t in sources]
    pairs = list(zip(sources, targets, strict=True))
    (tmp_path / "val.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    rows = [json.dumps({"source": s, "target": t}) for s, t in pairs]
    (tmp_path / "val.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "val.en").write_text("\n".join(sources) + "\n")
    (tmp_path / "val.de").write_text("\n".join(targets) + "\n")
    for name in ("val.tsv", "val.jsonl", "val", "val.en"):
        read = split_from_file(tmp_path / name, dataset, config)
        assert read.references == targets, name
        for field in ("encoder_inputs", "decoder_inputs", "targets", "target_weight"):
            np.testing.assert_array_equal(read.arrays[field], split.arrays[field][:5])
    (tmp_path / "bad.tsv").write_text("no tab here\n")
    with pytest.raises(UserError, match=r"bad\.tsv:1: expected source<TAB>target"):
        split_from_file(tmp_path / "bad.tsv", dataset, config)
