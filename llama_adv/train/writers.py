"""Metric outputs of a run: ``metrics.jsonl``, TensorBoard events, and progress on the
terminal (a tqdm bar on a terminal, plain lines otherwise, as in CI)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tensorboardX import SummaryWriter
from tqdm import tqdm


class MetricWriter:
    """Appends one JSON object per logged step and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: Path, total_steps: int, start_step: int, progress_bar: bool):
        self.jsonl = open(Path(workdir) / "metrics.jsonl", "a")  # noqa: SIM115
        self.tensorboard = SummaryWriter(str(Path(workdir) / "tensorboard"))
        self.bar = None
        if progress_bar and sys.stderr.isatty():
            self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True)
        self.last_step = start_step

    def write(self, step: int, metrics: dict[str, float], kind: str = "train") -> None:
        record = {"step": step, "kind": kind, **metrics}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(f"{kind}/{name}", value, step)
        if self.bar is not None:
            self.bar.update(step - self.last_step)
            self.bar.set_postfix(self._short(metrics), refresh=False)
        else:
            text = " ".join(f"{k}={v:.4g}" for k, v in self._short(metrics).items())
            print(f"[{kind}] step {step}: {text}", flush=True)
        self.last_step = max(self.last_step, step)

    @staticmethod
    def _short(metrics: dict[str, float]) -> dict[str, float]:
        keys = ("loss", "loss_adv", "accuracy", "attack_accuracy", "examples_per_sec")
        return {k: metrics[k] for k in keys if k in metrics}

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.jsonl.close()
        self.tensorboard.close()
