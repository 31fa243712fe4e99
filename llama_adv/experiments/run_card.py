"""A card for one trained run (a pre-training run that fine-tuning starts from, say):
``card.md`` and ``card.json`` with its model, data, tokens seen, every evaluation, its
throughput and what trained it.

    llama-adv card --workdir runs/pretrain_decoder --out results/pretrain_decoder

Reads only the run's files: ``config.json``, ``summary.json``, ``metrics.jsonl`` and
``sessions.jsonl`` (each ``train`` that trained it: the step it started from, the commit
and the machine; runs from before that file list none).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from llama_adv.errors import UserError
from llama_adv.experiments import provenance

# Evaluation keys shown as columns, in this order, when the run reports them.
EVAL_COLUMNS = ("loss", "perplexity", "accuracy", "attack_accuracy", "bleu")
MODEL_KEYS = ("name", "num_layers", "d_model", "num_heads", "d_ff")
DATA_KEYS = ("name", "train_split", "objective", "tokenizer", "vocab_size", "max_length")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_card(workdir: str | Path) -> dict[str, Any]:
    """The card of the finished run in ``workdir`` as a JSON-able dict.

    Raises:
      UserError: ``workdir`` holds no finished run (no ``summary.json``).
    """
    workdir = Path(workdir)
    if not (workdir / "summary.json").is_file():
        raise UserError(
            f"{workdir} holds no finished run (no summary.json): train it to the end first."
        )
    config = json.loads((workdir / "config.json").read_text())
    summary = json.loads((workdir / "summary.json").read_text())
    rows = _jsonl(workdir / "metrics.jsonl")
    train = [r for r in rows if r["kind"] == "train" and r.get("examples_per_sec")]
    # The loop's own count of tokens per example (padding included), from its logged rates.
    per_example = statistics.median(r["tokens_per_sec"] / r["examples_per_sec"] for r in train)
    steps, batch = summary["step"], config["train"]["batch_size"]
    data = config["data"]
    return {
        "workdir": str(workdir),
        "model": {key: config["model"][key] for key in MODEL_KEYS},
        "num_params": summary["num_params"],
        "data": {key: data[key] for key in DATA_KEYS},
        "eval_split": config["eval"]["split"],
        "steps": steps,
        "batch_size": batch,
        "tokens_per_example": per_example,
        "tokens_seen": steps * batch * per_example,
        "learning_rate": config["optim"]["learning_rate"],
        "evaluations": [r for r in rows if r["kind"] == "eval"],
        "tokens_per_sec_median": statistics.median(r["tokens_per_sec"] for r in train),
        "step_time_sec": summary["step_time_sec"],
        "sessions": _jsonl(workdir / "sessions.jsonl"),
    }


def _markdown(card: dict[str, Any], command: str) -> str:
    m, d = card["model"], card["data"]
    evals = card["evaluations"]
    columns = [c for c in EVAL_COLUMNS if any(c in e for e in evals)]
    lines = [
        f"# Run card: `{card['workdir']}`",
        "",
        f"- command: `{command}`",
        f"- card made at commit {provenance.git_commit()} on {provenance.machine()['summary']}"
        f", {time.strftime('%Y-%m-%d')}",
        f"- model: {m['name']}, {m['num_layers']} layers, d_model {m['d_model']}, "
        f"{m['num_heads']} heads, d_ff {m['d_ff']}: {card['num_params']:,} parameters",
        f"- data: {d['name']}[{d['train_split']}], objective {d['objective'] or 'task'}, "
        f"tokenizer {d['tokenizer']} ({d['vocab_size']} pieces), length {d['max_length']}",
        f"- trained: {card['steps']:,} steps x {card['batch_size']} examples x "
        f"{card['tokens_per_example']:.0f} tokens = {card['tokens_seen'] / 1e6:.2f}M tokens, "
        f"learning rate {card['learning_rate']}",
        f"- throughput: {card['tokens_per_sec_median']:,.0f} tokens/s (median of the logged "
        f"rows); step {card['step_time_sec']:.2f} s (median of the last session)",
        "",
        f"## Evaluations on `{card['eval_split']}`",
        "",
        "| step | " + " | ".join(columns) + " | examples |",
        "|---:|" + "---:|" * (len(columns) + 1),
    ]
    for e in evals:
        cells = [f"{e[c]:.4g}" if c in e else "" for c in columns]
        examples = f"{e.get('num_examples', 0):,.0f}"
        lines.append(f"| {e['step']} | " + " | ".join(cells) + f" | {examples} |")
    lines += ["", "## Sessions (each `train` that trained it)", ""]
    if card["sessions"]:
        lines += ["| from step | commit | devices | machine | started |", "|---:|---|---:|---|---|"]
        lines += [f"| {s['step']} | {s['commit']} | {s['devices']} | {s['machine']} | "
                  f"{s['time']} |" for s in card["sessions"]]  # fmt: skip
        if card["sessions"][0]["step"] > 0:
            lines += ["", f"Steps before {card['sessions'][0]['step']}: not recorded (trained "
                      "before `train` wrote sessions.jsonl)."]  # fmt: skip
    else:
        lines.append("Not recorded (the run started before `train` wrote sessions.jsonl).")
    return "\n".join(lines) + "\n"


def write_run_card(workdir: str | Path, out: str | Path, command: str) -> Path:
    """Writes ``OUT/card.md`` and ``OUT/card.json`` for the run in ``workdir``; returns
    ``OUT``."""
    card = run_card(workdir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "card.json").write_text(json.dumps({**card, "command": command}, indent=2) + "\n")
    (out / "card.md").write_text(_markdown(card, command))
    return out
