"""The quickstart: train the same small decoder-only model clean and with an adversarial
method on the synthetic sentiment task, then print one table comparing them.

    llama-adv quickstart --workdir runs/quickstart --method fgm
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from llama_adv.config import load_config
from llama_adv.train import train_and_evaluate

QUICKSTART_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart.py"


def format_table(rows: list[dict]) -> str:
    """Markdown table: method, clean accuracy, accuracy under attack, step time, ratio."""
    base = rows[0]["step_time_sec"] or float("nan")
    lines = [
        "| method | clean accuracy | accuracy under attack | step time (ms) | vs clean |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        step = row["step_time_sec"] or float("nan")
        lines.append(
            f"| {row['method']} | {row['eval']['accuracy']:.3f} "
            f"| {row['eval']['attack_accuracy']:.3f} | {1000 * step:.1f} | {step / base:.2f}x |"
        )
    return "\n".join(lines)


def run_quickstart(
    workdir: str | Path,
    method: str = "fgm",
    overrides: list[str] = (),
    variant: str = "",
    config_path: Path = QUICKSTART_CONFIG,
) -> str:
    """Trains ``none`` and ``method`` under ``workdir/<method>``; writes and returns the table.

    Args:
      variant: extra ``configs/quickstart.py`` variant string (``"tiny"`` in tests).
      overrides: ``section.key=value`` overrides applied to both runs.
    """
    workdir = Path(workdir)
    rows = []
    start = time.perf_counter()
    for name in ("none", method):
        arg = ",".join(filter(None, [f"method={name}", variant]))
        config = load_config(f"{config_path}:{arg}", overrides)
        rows.append(train_and_evaluate(config, workdir / name))
    table = format_table(rows)
    attack = config.eval.attack
    header = (
        f"Synthetic sentiment, decoder-only ({rows[0]['num_params']:,} parameters), "
        f"{config.train.num_steps} steps each; attack: {attack.method.upper()}-{attack.steps} "
        f"{attack.norm} at radius {attack.epsilon}; total wall time "
        f"{time.perf_counter() - start:.0f} s."
    )
    (workdir / "table.md").write_text(f"{header}\n\n{table}\n")
    (workdir / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{header}\n\n{table}\n")
    return table
