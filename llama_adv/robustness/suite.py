"""``run_robustness(workdir)``: every configured attack against a run's best checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from llama_adv.errors import UserError
from llama_adv.robustness import report
from llama_adv.robustness.advsets import load_adversarial_set
from llama_adv.robustness.charlevel import deepwordbug
from llama_adv.robustness.classifier import Classifier, TextCodec, token_field
from llama_adv.robustness.embedding import embedding_curve, make_attack_step, parse_attack
from llama_adv.robustness.loading import LoadedRun, load_run
from llama_adv.robustness.metrics import Outcomes, summarize
from llama_adv.robustness.noise import noisy_texts
from llama_adv.robustness.substitution import run_hotflip
from llama_adv.train.evaluate import bleu_unsupported

SUITES = {
    "default": ("embedding", "hotflip", "deepwordbug", "noise", "adv_set"),
    "embedding": ("embedding",),
    "discrete": ("hotflip", "deepwordbug", "noise", "adv_set"),
    "noise": ("noise",),
}


def _seq2seq_setup(run: LoadedRun, split) -> tuple[dict[str, Any], str]:
    """``make_attack_step`` arguments for a seq2seq run (encoder stream only; greedy decodes
    up to the split's target width for BLEU), and why BLEU is not reported (``""``: it is).
    Other tasks: ``({}, "")``."""
    exp, rc = run.exp, run.config.robustness
    if run.config.task.name != "seq2seq":
        return {}, ""
    reason = bleu_unsupported(exp.model, exp.task)
    if reason:
        return {}, reason
    setup: dict[str, Any] = {"streams": ("encoder",)}
    if not rc.bleu:
        return setup, "robustness.bleu is off"
    tok = exp.dataset.tokenizer
    setup.update(
        decode_length=split.arrays["targets"].shape[1], start_id=tok.bos_id, eos_id=tok.eos_id
    )
    return setup, ""


def _embedding(run: LoadedRun, split, n: int, rng, seq2seq: dict[str, Any]) -> dict[str, Any]:
    rc, exp = run.config.robustness, run.exp
    out = {}
    for name in rc.embedding_attacks:
        method, norm = parse_attack(name)
        step = make_attack_step(
            exp.model,
            exp.task,
            method=method,
            norm=norm,
            scope=rc.scope,
            steps=rc.pgd_steps,
            step_size=rc.pgd_step_size,
            **seq2seq,
        )
        epsilons = rc.epsilons if norm == "l2" else rc.linf_epsilons
        with tqdm(total=n * len(epsilons), desc=name, unit="ex", leave=False) as bar:
            points = embedding_curve(
                step,
                run.params,
                split,
                run.mesh,
                epsilons=epsilons,
                batch_size=rc.batch_size,
                limit=n,
                rng=jax.random.fold_in(rng, len(out)),
                token_task=exp.task.head == "lm",
                progress=bar,
                tokenizer=exp.dataset.tokenizer,
            )
        out[name] = {"method": method, "norm": norm, "points": points}
    return out


def _examples(name, texts, adv_texts, labels, clean, adv, count) -> list[dict]:
    return [
        {
            "attack": name,
            "original": texts[i],
            "adversarial": adv_texts[i],
            "label": int(labels[i]),
            "clean_prediction": int(clean[i]),
            "adversarial_prediction": int(adv[i]),
        }
        for i in range(min(count, len(texts)))
    ]


def _discrete(
    run: LoadedRun, split, n: int, families, skipped: dict[str, str]
) -> tuple[dict, list[dict]]:
    """Token, character and noise attacks on the first ``n`` examples (classification);
    attacks that cannot run on ``split`` are added to ``skipped`` with the reason."""
    rc, exp = run.config.robustness, run.exp
    field = token_field(split.arrays)
    clf = Classifier(exp.model, exp.task, run.params, field, rc.batch_size, exp.dataset.vocab_size)
    tokens, labels = split.arrays[field][:n], split.arrays["label"][:n]
    clean_pred = clf.predict(tokens)
    clean_ok = clean_pred == labels
    tok = exp.dataset.tokenizer
    texts = [tok.decode(t) for t in tokens] if split.texts is None else split.texts[:n]
    results, examples = {}, []

    if "hotflip" in families:
        t0 = time.perf_counter()
        adv, changed, queries, _ = run_hotflip(
            clf,
            tokens,
            labels,
            fraction=rc.sub_budget,
            neighbors=rc.sub_neighbors,
            candidates=rc.sub_candidates,
        )
        adv_pred = clf.predict(adv)
        editable = np.maximum(np.sum(tokens >= 4, axis=1), 1)
        results["hotflip"] = summarize(
            Outcomes(clean_ok, adv_pred == labels, changed.sum(1) / editable, queries)
        ) | {"seconds": time.perf_counter() - t0}
        examples += _examples(
            "hotflip",
            texts,
            [tok.decode(a) for a in adv],
            labels,
            clean_pred,
            adv_pred,
            rc.num_saved_examples,
        )

    codec = None
    if {"deepwordbug", "noise"} & set(families):
        if split.texts is None:
            why = "needs the split's texts; this split has none"
            skipped.update({f: why for f in ("deepwordbug", "noise") if f in families})
        else:
            codec = TextCodec(tok, split, field)

    if codec is not None and "deepwordbug" in families:
        t0 = time.perf_counter()
        parts, adv_texts = [], []
        for start in tqdm(range(0, n, rc.batch_size), desc="deepwordbug", leave=False):
            sl = slice(start, min(start + rc.batch_size, n))
            r = deepwordbug(
                clf, codec, texts[sl], labels[sl], budget=rc.char_budget, seed=rc.seed, offset=start
            )
            adv_pred = clf.predict(codec.encode(r.texts))
            parts.append(
                Outcomes(
                    clean_ok[sl], adv_pred == labels[sl], r.words_changed / r.num_words, r.queries
                )
            )
            adv_texts += r.texts
        outcomes = Outcomes.concat(parts)
        results["deepwordbug"] = summarize(outcomes) | {"seconds": time.perf_counter() - t0}
        adv_pred = clf.predict(codec.encode(adv_texts))
        examples += _examples(
            "deepwordbug", texts, adv_texts, labels, clean_pred, adv_pred, rc.num_saved_examples
        )

    if codec is not None and "noise" in families:
        for kind in rc.noise:
            for rate in rc.noise_rates:
                name = f"noise_{kind}@{rate:g}"
                noisy, frac = noisy_texts(texts, kind, rate, rc.seed)
                adv_pred = clf.predict(codec.encode(noisy))
                results[name] = summarize(Outcomes(clean_ok, adv_pred == labels, frac, np.ones(n)))
                examples += _examples(
                    name, texts, noisy, labels, clean_pred, adv_pred, min(3, rc.num_saved_examples)
                )
    return results, examples


def _adv_set(run: LoadedRun, split, path: str, task: str) -> dict:
    """Accuracy on an external adversarial set beside the clean split's accuracy."""
    rc, exp = run.config.robustness, run.exp
    field = token_field(split.arrays)
    clf = Classifier(exp.model, exp.task, run.params, field, rc.batch_size, exp.dataset.vocab_size)
    texts, labels = load_adversarial_set(path, task)
    codec = TextCodec(exp.dataset.tokenizer, split, field)
    acc = float(np.mean(clf.predict(codec.encode(texts)) == np.asarray(labels)))
    clean = float(np.mean(clf.predict(split.arrays[field]) == split.arrays["label"]))
    name = f"adv_set:{Path(path).name}" + (f":{task}" if path.endswith(".json") else "")
    return {
        name: {
            "accuracy": acc,
            "num_examples": len(texts),
            "clean_accuracy": clean,
            "clean_examples": len(split),
        }
    }


def _classification_attacks(
    run: LoadedRun, split, n: int, families, adv_set: tuple[str, str], skipped: dict[str, str]
) -> tuple[dict[str, Any], list[dict]]:
    """The suite's discrete attacks (narrowed by the config's lists) and the adversarial set
    ``adv_set`` = ``(path or "", task key)``: ``({"attacks": ..., "adv_sets": ...},
    examples)``. They need a classification run; otherwise each is added to ``skipped``."""
    rc = run.config.robustness
    wanted = [f for f in families if f in rc.discrete_attacks or (f == "noise" and rc.noise)]
    if "adv_set" in families and adv_set[0]:
        wanted.append("adv_set")
    if run.exp.task.head != "classification":
        why = f"needs a classification task; this run's task is {run.config.task.name}"
        skipped.update(dict.fromkeys(wanted, why))
        return {}, []
    parts: dict[str, Any] = {}
    examples: list[dict] = []
    attacks = [f for f in wanted if f != "adv_set"]
    if attacks:
        parts["attacks"], examples = _discrete(run, split, n, attacks, skipped)
    if "adv_set" in wanted:
        parts["adv_sets"] = _adv_set(run, split, *adv_set)
    return parts, examples


def run_robustness(
    workdir: str | Path,
    *,
    suite: str | None = None,
    limit: int | None = None,
    adv_set: str | None = None,
    adv_task: str | None = None,
    command: str = "",
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Attacks the best checkpoint of ``workdir``; writes ``workdir/robustness/`` and returns
    the results. Arguments left as None come from the run's ``config.robustness``."""
    run = load_run(workdir, overrides)
    rc = run.config.robustness
    suite = suite or rc.suite
    if suite not in SUITES:
        raise UserError(f"Unknown robustness suite {suite!r}; valid: {', '.join(SUITES)}.")
    families = SUITES[suite]
    limit = rc.limit if limit is None else limit
    split_name = rc.split or run.config.eval.split
    split = run.exp.dataset.split(split_name)
    n = len(split) if not limit else min(limit, len(split))
    rng = jax.random.key(rc.seed)

    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "run": str(workdir),
        "step": run.step,
        "method": run.config.adv.method,
        "train_epsilon": run.config.adv.epsilon,
        "task": run.config.task.name,
        "split": split_name,
        "num_examples": n,
        "suite": suite,
        "scope": rc.scope,
    }
    skipped: dict[str, str] = {}  # attack or metric -> why it was not run
    if "embedding" in families:
        seq2seq, no_bleu = _seq2seq_setup(run, split)
        if no_bleu:
            skipped["bleu"] = no_bleu
        if "streams" in seq2seq:
            results["perturbed_streams"] = list(seq2seq["streams"])
        results["embedding"] = _embedding(run, split, n, rng, seq2seq)
    adv_path = rc.adv_set if adv_set is None else adv_set
    parts, examples = _classification_attacks(
        run, split, n, families, (adv_path, adv_task or rc.adv_task), skipped
    )
    results.update(parts)
    for name, why in skipped.items():
        print(f"robustness: skipped {name}: {why}")
    results["skipped"] = skipped
    seconds = time.perf_counter() - t0
    results["seconds"] = seconds
    results["seconds_per_1000_examples"] = 1000.0 * seconds / max(n, 1)
    results["provenance"] = report.provenance(command)
    report.write_outputs(results, examples, Path(workdir) / "robustness")
    return results


def compare_runs(
    workdirs: list[str], outdir: str | Path, *, command: str = "", rerun: bool = False, **kwargs
) -> list[dict[str, Any]]:
    """Puts several runs in one table and one plot under ``outdir``; a run that already
    has ``robustness/results.json`` is reused unless ``rerun``."""
    runs = []
    for w in workdirs:
        path = Path(w) / "robustness" / "results.json"
        if path.is_file() and not rerun:
            runs.append(json.loads(path.read_text()))
        else:
            runs.append(run_robustness(w, command=command, **kwargs))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "compare.md").write_text(report.compare_markdown(runs, command))
    (outdir / "compare.json").write_text(json.dumps(runs, indent=2) + "\n")
    report.plot_curves(runs, outdir / "compare.png")
    return runs
