"""``run_robustness(workdir)``: every configured attack against a run's best checkpoint."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from llama_adv.config import set_value
from llama_adv.errors import UserError
from llama_adv.robustness import report
from llama_adv.robustness.advsets import check_labels, load_adversarial_set
from llama_adv.robustness.charlevel import deepwordbug
from llama_adv.robustness.classifier import Classifier, TextCodec, token_field
from llama_adv.robustness.embedding import embedding_curve, make_attack_step, parse_attack
from llama_adv.robustness.loading import LoadedRun, load_run, run_config
from llama_adv.robustness.metrics import Outcomes, summarize
from llama_adv.robustness.noise import noisy_texts
from llama_adv.robustness.substitution import run_hotflip
from llama_adv.robustness.validate import SUITES, require_adv_set, validate_robustness_config
from llama_adv.train.evaluate import bleu_unsupported


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
            radius_unit=rc.get("radius_unit", "absolute"),
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
    run: LoadedRun, split, n: int, families, clf: Classifier, codec: TextCodec | None
) -> tuple[dict, list[dict]]:
    """Token, character and noise attacks on the first ``n`` examples (classification);
    ``codec`` is None when the split has no texts (then only HotFlip runs)."""
    rc, exp = run.config.robustness, run.exp
    field = token_field(split.arrays)
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
        ordinary = ~np.isin(tokens, [tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id])
        editable = np.maximum(np.sum(ordinary, axis=1), 1)
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


@dataclasses.dataclass
class AdvSet:
    """An adversarial set read before any attack: its file, task key, texts and labels."""

    path: str
    task: str
    texts: list[str]
    labels: list[int]

    @property
    def name(self) -> str:
        return f"adv_set:{Path(self.path).name}" + (
            f":{self.task}" if self.path.endswith(".json") else ""
        )


def _adv_set(run: LoadedRun, split, adv: AdvSet, clf: Classifier, codec: TextCodec) -> dict:
    """Accuracy on an external adversarial set beside the clean split's accuracy."""
    field = token_field(split.arrays)
    acc = float(np.mean(clf.predict(codec.encode(adv.texts)) == np.asarray(adv.labels)))
    clean = float(np.mean(clf.predict(split.arrays[field]) == split.arrays["label"]))
    return {
        adv.name: {
            "accuracy": acc,
            "num_examples": len(adv.texts),
            "clean_accuracy": clean,
            "clean_examples": len(split),
        }
    }


def _wanted(run: LoadedRun, families, adv: AdvSet | None) -> list[str]:
    """The suite's discrete families narrowed by the config's lists, then ``adv_set`` when a
    set is given (whatever the suite)."""
    rc = run.config.robustness
    wanted = [f for f in families if f in rc.discrete_attacks or (f == "noise" and rc.noise)]
    return wanted + (["adv_set"] if adv is not None else [])


@dataclasses.dataclass
class Prepared:
    """A run's resolved, validated robustness config and its adversarial set, ready to attack;
    nothing has been built or written yet."""

    workdir: Path
    config: Any
    suite: str
    adv: AdvSet | None


def prepare(
    workdir: str | Path,
    *,
    suite: str | None = None,
    limit: int | None = None,
    adv_set: str | None = None,
    adv_task: str | None = None,
    overrides: tuple[str, ...] = (),
) -> Prepared:
    """Resolves the run's ``robustness`` section (the arguments override it), validates it and
    reads the adversarial set, so that bad input fails before any attack runs.

    Raises:
      UserError: one line naming the bad argument, field or file.
    """
    if suite is not None and suite not in SUITES:
        raise UserError(f"--suite {suite!r} is unknown; valid: {', '.join(SUITES)}.")
    if limit is not None and limit < 0:
        raise UserError(f"--limit must be >= 0 (0 = every example), got {limit}.")
    config = run_config(workdir, overrides)
    for key, value in (("suite", suite), ("limit", limit), ("adv_set", adv_set),
                       ("adv_task", adv_task)):  # fmt: skip
        if value is not None:
            set_value(config, f"robustness.{key}", value)
    rc = config.robustness
    validate_robustness_config(rc)
    require_adv_set(rc)
    adv = None
    if rc.adv_set:
        adv = AdvSet(rc.adv_set, rc.adv_task, *load_adversarial_set(rc.adv_set, rc.adv_task))
    return Prepared(Path(workdir), config, rc.suite, adv)


def attack(prepared: Prepared, command: str = "") -> dict[str, Any]:
    """Runs the prepared suite on the run's best checkpoint; writes ``workdir/robustness/``
    (the ``generation`` suite: ``workdir/robustness/generation/``, :mod:`.chat_suite`)."""
    if prepared.suite == "generation":
        from llama_adv.robustness.chat_suite import attack_generation

        return attack_generation(prepared, command)
    workdir, adv = prepared.workdir, prepared.adv
    run = load_run(workdir, config=prepared.config)
    rc, exp = run.config.robustness, run.exp
    suite = prepared.suite
    families = SUITES[suite]
    split_name = rc.split or run.config.eval.split
    split = exp.dataset.split(split_name)
    n = len(split) if not rc.limit else min(rc.limit, len(split))
    rng = jax.random.key(rc.seed)

    # Everything that can refuse the run is checked before the first attack.
    skipped: dict[str, str] = {}  # attack or metric -> why it was not run
    wanted = _wanted(run, families, adv)
    clf = codec = None
    if exp.task.head != "classification":
        why = f"needs a classification task; this run's task is {run.config.task.name}"
        skipped.update(dict.fromkeys(wanted, why))
        wanted = []
    else:
        if adv is not None:
            check_labels(adv.path, adv.labels, exp.dataset.num_classes)
        texts = [f for f in ("deepwordbug", "noise", "adv_set") if f in wanted]
        if texts and split.texts is None:
            why = "needs the split's texts; this split has none"
            skipped.update(dict.fromkeys(texts, why))
            wanted = [f for f in wanted if f not in texts]
        elif texts:
            codec = TextCodec(exp.dataset.tokenizer, split, token_field(split.arrays), check=n)
        if wanted:
            field = token_field(split.arrays)
            vocab = exp.dataset.vocab_size
            clf = Classifier(exp.model, exp.task, run.params, field, rc.batch_size, vocab)

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
    if "embedding" in families:
        seq2seq, no_bleu = _seq2seq_setup(run, split)
        if no_bleu:
            skipped["bleu"] = no_bleu
        if "streams" in seq2seq:
            results["perturbed_streams"] = list(seq2seq["streams"])
        results["embedding"] = _embedding(run, split, n, rng, seq2seq)
    examples: list[dict] = []
    attacks = [f for f in wanted if f != "adv_set"]
    if attacks:
        results["attacks"], examples = _discrete(run, split, n, attacks, clf, codec)
    if "adv_set" in wanted:
        results["adv_sets"] = _adv_set(run, split, adv, clf, codec)
    for name, why in skipped.items():
        print(f"robustness: skipped {name}: {why}")
    results["skipped"] = skipped
    seconds = time.perf_counter() - t0
    results["seconds"] = seconds
    results["seconds_per_1000_examples"] = 1000.0 * seconds / max(n, 1)
    results["provenance"] = report.provenance(command)
    report.write_outputs(results, examples, Path(workdir) / "robustness")
    return results


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
    the results. Arguments left as None come from the run's ``config.robustness``. An
    adversarial set (``adv_set`` or ``robustness.adv_set``) is evaluated with every suite;
    ``suite="advset"`` evaluates it alone. Bad input raises UserError before any attack runs
    and before anything is written."""
    prepared = prepare(
        workdir, suite=suite, limit=limit, adv_set=adv_set, adv_task=adv_task, overrides=overrides
    )
    return attack(prepared, command)


def _saved_results(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        why = f"{path} is not valid JSON ({error}); pass --rerun to attack the run again."
        raise UserError(why) from None


def compare_runs(
    workdirs: list[str], outdir: str | Path, *, command: str = "", rerun: bool = False, **kwargs
) -> list[dict[str, Any]]:
    """Puts several runs in one table and one plot under ``outdir``; a run that already
    has ``robustness/results.json`` is reused unless ``rerun``. Every run to attack is
    prepared (validated, its adversarial set read) before the first attack."""
    saved = {w: Path(w) / "robustness" / "results.json" for w in workdirs}
    reuse = {w: _saved_results(p) for w, p in saved.items() if p.is_file() and not rerun}
    prepared = {w: prepare(w, **kwargs) for w in workdirs if w not in reuse}
    done = dict(reuse)
    for w in workdirs:  # a run named twice is attacked once
        if w not in done:
            done[w] = attack(prepared[w], command)
    runs = [done[w] for w in workdirs]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "compare.md").write_text(report.compare_markdown(runs, command))
    (outdir / "compare.json").write_text(json.dumps(runs, indent=2) + "\n")
    report.plot_curves(runs, outdir / "compare.png")
    return runs
