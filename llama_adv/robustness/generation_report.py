"""Outputs of the attacks on generation, like the robustness suite's (``report.py``):
``results.json``, ``table.md``, ``curve.png`` (target loss and success against attack
step) and ``examples.jsonl`` (prompt, suffix, generation per behaviour and attack)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Results = dict[str, Any]
COLUMNS = (
    "ASR (target prefix)",
    "ASR (no refusal)",
    "teacher-forced success",
    "final loss",
    "steps to success",
    "behaviours",
)


def _row(name: str, s: dict[str, Any]) -> str:
    steps = s.get("mean_success_step")
    cells = (
        f"{s['asr_target']:.3f}",
        f"{s['asr_refusal']:.3f}",
        f"{s['teacher_forced_success']:.3f}" if "teacher_forced_success" in s else "-",
        f"{s['mean_final_loss']:.3f}" if "mean_final_loss" in s else "-",
        f"{steps:.1f}" if steps is not None else "-",
        f"{s['num_behaviours']}",
    )
    return f"| {name} | " + " | ".join(cells) + " |"


def table_markdown(results: Results) -> str:
    """Provenance, one row per attack (and the unattacked prompts), then utility."""
    p = results["provenance"]
    lines = [
        f"# Attacks on generation: `{results.get('run', 'model')}`",
        "",
        f"- command: `{p['command']}`",
        f"- commit: `{p['commit']}`",
        f"- hardware: {p['hardware']}",
        f"- time: {results['seconds']:.1f} s",
        f"- greedy generation: {results['max_new_tokens']} new tokens; refusal phrases: "
        f"{results['refusal_phrases']}",
        "",
        "| attack | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    lines.append(_row("none (clean prompt)", results["clean"]))
    lines += [_row(name, s) for name, s in results["attacks"].items()]
    utility = results.get("utility", {})
    if utility:
        lines += ["", "Utility:", ""]
        if "heldout_perplexity" in utility:
            lines.append(
                f"- held-out perplexity: {utility['heldout_perplexity']:.3f} "
                f"({utility['heldout_tokens']} target tokens)"
            )
        if "clean_refusal_rate" in utility:
            lines.append(
                f"- refusal rate on clean prompts: {utility['clean_refusal_rate']:.3f} "
                f"({utility['num_clean_prompts']} prompts)"
            )
    return "\n".join(lines).rstrip() + "\n"


def plot_curves(results: Results, path: Path) -> None:
    """Mean target loss (GCG: best so far) and the fraction of behaviours whose
    teacher-forced argmax has matched the target, against attack step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, hit_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name, s in results["attacks"].items():
        curve = s.get("loss_curve", [])
        loss_ax.plot(range(len(curve)), curve, label=name)
        hits = s.get("success_curve", [])
        hit_ax.plot(range(len(hits)), hits, label=name)
    loss_ax.set_xlabel("attack step")
    loss_ax.set_ylabel("mean target loss (nats/token)")
    loss_ax.set_yscale("log")
    hit_ax.set_xlabel("attack step")
    hit_ax.set_ylabel("teacher-forced success (fraction)")
    hit_ax.set_ylim(-0.02, 1.02)
    for ax in (loss_ax, hit_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: Results, examples: list[dict], outdir: Path) -> None:
    """Writes the four files into ``outdir`` (created if missing)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (outdir / "table.md").write_text(table_markdown(results))
    with open(outdir / "examples.jsonl", "w") as f:
        for row in examples:
            f.write(json.dumps(row) + "\n")
    plot_curves(results, outdir / "curve.png")
