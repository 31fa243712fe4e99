"""Metric outputs of a run: ``metrics.jsonl``, TensorBoard events, and progress on the
terminal (a tqdm bar on a terminal, plain lines otherwise, as in CI).

``metrics.jsonl`` holds each (step, kind) row once, in step order, whatever happened to
earlier attempts of the run: a resumed run first drops the rows logged after the
checkpoint it resumes from (a killed run logs past its last checkpoint) and a partial
last line (a kill while writing); TensorBoard purges those steps' events likewise.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tqdm import tqdm


def repair_metrics(path: Path, last_step: int, keep_eval_at_last: bool = True) -> int:
    """Rewrites ``metrics.jsonl`` to the rows of steps up to ``last_step``, each (step,
    kind) once (the last written wins), in step order, without partial or broken lines.

    Args:
      path: the file (nothing happens if it does not exist).
      last_step: the step the run resumes from.
      keep_eval_at_last: False drops the evaluation row of ``last_step`` (it is redone).

    Returns:
      How many lines were dropped.
    """
    if not path.exists():
        return 0
    raw = path.read_bytes()
    rows: dict[tuple[int, str], dict] = {}
    lines = [line for line in raw.split(b"\n") if line.strip()]
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        key = (record["step"], str(record.get("kind", "train")))
        if key[0] > last_step or (key == (last_step, "eval") and not keep_eval_at_last):
            continue
        rows.pop(key, None)
        rows[key] = record
    ordered = sorted(rows.values(), key=lambda r: (r["step"], r.get("kind", "train") != "train"))
    text = "".join(json.dumps(r) + "\n" for r in ordered).encode()
    if text != raw:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(text)
        os.replace(tmp, path)
    return len(lines) - len(ordered)


class MetricWriter:
    """Appends one JSON object per logged step and mirrors scalars to TensorBoard.

    Args:
      workdir: the run's folder.
      total_steps: of the run (the progress bar's length).
      start_step: the step the run starts or resumes from; rows and events of later steps
        from earlier attempts are dropped.
      progress_bar: a tqdm bar when stderr is a terminal.
      keep_eval_at_start: False also drops the evaluation row of ``start_step`` (a finished
        run evaluated again).
      enabled: False writes and prints nothing but keeps the bookkeeping (processes other
        than 0 of a multi-process run: process 0 writes the run's metrics).
    """

    def __init__(
        self,
        workdir: Path,
        total_steps: int,
        start_step: int,
        progress_bar: bool,
        keep_eval_at_start: bool = True,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.last_step = start_step
        self.last_train_step = start_step  # the last step with a train row in the file
        self.dropped, self.bar = 0, None
        if not enabled:
            return
        path = Path(workdir) / "metrics.jsonl"
        self.dropped = repair_metrics(path, start_step, keep_eval_at_start)
        self.jsonl = open(path, "a")  # noqa: SIM115
        events = Path(workdir) / "tensorboard"
        # A SessionLog.START at purge_step makes TensorBoard drop earlier attempts' events
        # of that step and later.
        purge = start_step + 1 if events.is_dir() and any(events.iterdir()) else None
        # Imported here, when a run writes events: the train layer then imports without
        # tensorboardX (benchmarks/gpu.py on a machine that lacks it), and without the
        # torch import tensorboardX makes (seconds).
        from tensorboardX import SummaryWriter

        self.tensorboard = SummaryWriter(str(events), purge_step=purge)
        if progress_bar and sys.stderr.isatty():
            self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True)

    def write(self, step: int, metrics: dict[str, float], kind: str = "train") -> None:
        if kind == "train":
            self.last_train_step = step
        if not self.enabled:
            self.last_step = max(self.last_step, step)
            return
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
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.jsonl.close()
        self.tensorboard.close()
