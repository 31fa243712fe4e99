"""Robustness outputs: ``results.json``, ``table.md``, ``curve.png`` and ``examples.jsonl``,
for one run or (``compare``) several runs side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from llama_adv.experiments.provenance import git_commit, machine

Results = dict[str, Any]
COLUMNS = ("clean acc", "acc under attack", "success rate", "perturbed %", "queries", "examples")


def provenance(command: str) -> dict[str, str]:
    """The command, the code's git commit (short, ``+dirty`` with local changes) and the
    hardware: the devices JAX runs on and :func:`provenance.machine`'s one line."""
    commit = git_commit()  # 40 hex digits (+dirty), or "unknown"
    short = commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")
    device = jax.devices()[0]
    devices = f"{jax.device_count()} x {device.platform}:{device.device_kind}"
    hardware = f"{devices}; host {machine()['summary']}"
    return {"command": command, "commit": short, "hardware": hardware}


def _row(name: str, s: dict[str, float]) -> str:
    cells = (
        f"{s['clean_accuracy']:.3f}",
        f"{s['accuracy_under_attack']:.3f}",
        f"{s['attack_success_rate']:.3f}" if "attack_success_rate" in s else "-",
        f"{s['avg_perturbed_percent']:.1f}" if "avg_perturbed_percent" in s else "-",
        f"{s['avg_queries']:.1f}" if "avg_queries" in s else "-",
        f"{s['num_examples']}",
    )
    return f"| {name} | " + " | ".join(cells) + " |"


def attack_rows(results: Results) -> dict[str, dict[str, float]]:
    """One TextAttack-style summary per attack; an embedding attack is reported at its
    largest radius (its whole curve is in the radius table and the plot)."""
    rows = {}
    for name, curve in results.get("embedding", {}).items():
        last = curve["points"][-1]
        n = results["num_examples"]
        clean = last["clean_accuracy"]
        robust = last["accuracy"]
        summary = {"clean_accuracy": clean, "accuracy_under_attack": robust, "num_examples": n}
        if clean > 0:
            summary["attack_success_rate"] = 1.0 - robust / clean
        rows[f"{name} @ {last['epsilon']:g}"] = summary
    rows.update(results.get("attacks", {}))
    for name, s in results.get("adv_sets", {}).items():
        rows[name] = {
            "clean_accuracy": s["clean_accuracy"],
            "accuracy_under_attack": s["accuracy"],
            "num_examples": s["num_examples"],
        }
    return rows


def curve_metrics(point: dict[str, float]) -> list[str]:
    """The metrics a radius table shows, from the keys of one curve point: BLEU and loss
    (seq2seq), perplexity and loss (lm) or accuracy (classification)."""
    if "bleu" in point:
        return ["bleu", "loss"]
    if "perplexity" in point:
        return ["perplexity", "loss"]
    return ["accuracy"]


def skipped_lines(results: Results) -> list[str]:
    """One line per reason: ``- skipped: hotflip, deepwordbug: needs ...``."""
    by_reason: dict[str, list[str]] = {}
    for name, why in results.get("skipped", {}).items():
        by_reason.setdefault(why, []).append(name)
    return [f"- skipped: {', '.join(names)}: {why}" for why, names in by_reason.items()]


def table_markdown(results: Results) -> str:
    """The run's table: provenance header, one row per attack, then the metrics per radius
    (accuracy; perplexity and loss; or BLEU and loss)."""
    p = results["provenance"]
    lines = [
        f"# Robustness of `{results['run']}` (step {results['step']}, "
        f"method {results['method']}, split {results['split']})",
        "",
        f"- command: `{p['command']}`",
        f"- commit: `{p['commit']}`",
        f"- hardware: {p['hardware']}",
        f"- time: {results['seconds']:.1f} s "
        f"({results['seconds_per_1000_examples']:.1f} s per 1,000 examples)",
        *(
            [f"- perturbed streams: {', '.join(results['perturbed_streams'])}"]
            if "perturbed_streams" in results
            else []
        ),
        *skipped_lines(results),
        "",
        "| attack | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    lines += [_row(name, s) for name, s in attack_rows(results).items()]
    for name, curve in results.get("embedding", {}).items():
        keys = curve_metrics(curve["points"][0])
        if name == next(iter(results["embedding"])):
            lines += ["", f"{' and '.join(keys)} under embedding attack, by radius:", ""]
        lines += [
            f"| {name} | " + " | ".join(f"{q['epsilon']:g}" for q in curve["points"]) + " |",
            "|---" * (len(curve["points"]) + 1) + "|",
        ]
        lines += [
            f"| {key} | " + " | ".join(f"{q[key]:.3f}" for q in curve["points"]) + " |"
            for key in keys
        ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def compare_markdown(runs: list[Results], command: str) -> str:
    """Accuracy under attack (success rate) of several runs: one row per attack."""
    p = provenance(command)
    names = [f"{r['run']} ({r['method']})" for r in runs]
    rows = [attack_rows(r) for r in runs]
    attacks = list(dict.fromkeys(k for r in rows for k in r))
    lines = [
        "# Robustness comparison",
        "",
        f"- command: `{p['command']}`",
        f"- commit: `{p['commit']}`",
        f"- hardware: {p['hardware']}",
        "- cells: accuracy under attack (attack success rate); BLEU rows (seq2seq): BLEU "
        "under attack (clean BLEU)",
        "",
        "| attack | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    clean = [f"{next(iter(r.values()))['clean_accuracy']:.3f}" if r else "-" for r in rows]
    lines.append("| clean | " + " | ".join(clean) + " |")
    for attack in attacks:
        cells = []
        for r in rows:
            s = r.get(attack)
            rate = f" ({s['attack_success_rate']:.3f})" if s and "attack_success_rate" in s else ""
            cells.append(f"{s['accuracy_under_attack']:.3f}{rate}" if s else "-")
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    bleu = [bleu_rows(r) for r in runs]
    for attack in dict.fromkeys(k for r in bleu for k in r):
        cells = [f"{r[attack][1]:.2f} (clean {r[attack][0]:.2f})" if attack in r else "-"
                 for r in bleu]  # fmt: skip
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bleu_rows(results: Results) -> dict[str, tuple[float, float]]:
    """``{"ATTACK @ RADIUS BLEU": (clean BLEU, BLEU under attack)}`` at each embedding
    attack's largest radius (seq2seq runs; empty otherwise)."""
    rows = {}
    for name, curve in results.get("embedding", {}).items():
        last = curve["points"][-1]
        if "bleu" in last:
            rows[f"{name} @ {last['epsilon']:g} BLEU"] = (last["clean_bleu"], last["bleu"])
    return rows


def plot_curves(runs: list[Results], path: Path) -> None:
    """Accuracy (perplexity for lm, BLEU for seq2seq) against radius: one panel per norm,
    one line per attack and run; the picture a reader looks at first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = sorted({c["norm"] for r in runs for c in r.get("embedding", {}).values()})
    fig, axes = plt.subplots(
        1, max(len(norms), 1), figsize=(5 * max(len(norms), 1), 4), squeeze=False
    )
    styles = ("-", "--", ":", "-.")
    for a, norm in enumerate(norms):
        ax = axes[0, a]
        for i, r in enumerate(runs):
            for name, curve in r.get("embedding", {}).items():
                if curve["norm"] != norm:
                    continue
                key = curve_metrics(curve["points"][0])[0]
                label = f"{name}" + (f" [{r['method']}: {r['run']}]" if len(runs) > 1 else "")
                ax.plot(
                    [q["epsilon"] for q in curve["points"]],
                    [q[key] for q in curve["points"]],
                    styles[i % len(styles)],
                    marker="o",
                    label=label,
                )
                ax.set_ylabel(key)
        ax.set_xlabel(f"radius ({norm}, scope {runs[0].get('scope', 'example')})")
        ax.set_title(f"{norm} embedding attacks")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: Results, examples: list[dict], outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (outdir / "table.md").write_text(table_markdown(results))
    with open(outdir / "examples.jsonl", "w") as f:
        for row in examples:
            f.write(json.dumps(row) + "\n")
    plot_curves([results], outdir / "curve.png")
