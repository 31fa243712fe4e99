"""Checkpoints with orbax's CheckpointManager: the train state plus a JSON record of the
step and data position; the last N are kept, and the best by an evaluation metric.

Resuming takes the newest checkpoint that reads back (:meth:`Checkpointer.restore_latest`):
a checkpoint left broken (a truncated array file, a lost ``_METADATA`` or manifest, a
damaged record) is reported in one line and the one before it is used.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from llama_adv.train.state import TrainState


class Checkpointer:
    """Saves and restores :class:`TrainState` under ``workdir/checkpoints``.

    Args:
      directory: where the step folders go.
      keep: how many of the most recent checkpoints to keep.
      best_metric: evaluation metric ranking checkpoints ("" keeps no best).
      best_mode: ``"max"`` or ``"min"``.
      read_only: only look and restore (another run's checkpoints, for ``train.init_from``).
      cleanup: delete temporary folders of saves cut short (a killed run); only for the
        process that owns the workdir (it holds the workdir lock), never a reader.
    """

    def __init__(
        self,
        directory: Path,
        keep: int,
        best_metric: str = "",
        best_mode: str = "max",
        read_only: bool = False,
        cleanup: bool = False,
    ):
        self.best_metric, self.sign = best_metric, 1.0 if best_mode == "max" else -1.0
        keepers = [policies.LatestN(n=max(keep, 1))]
        if best_metric:
            keepers.append(
                policies.BestN(
                    get_metric_fn=self._score, n=1, keep_checkpoints_without_metrics=False
                )
            )
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policies.AnyPreservationPolicy(keepers),
                # Orbax writes a step's metrics only when it tracks a best: without best_fn
                # metrics() is always None and the BestN keeper never sees a score.
                best_fn=self._score if best_metric else None,
                best_mode="max",  # _score already carries the sign of best_mode
                create=not read_only,
                read_only=read_only,
                cleanup_tmp_directories=cleanup and not read_only,
            ),
        )

    def _score(self, metrics: dict) -> float:
        value = metrics.get(self.best_metric, float("nan"))
        return -math.inf if math.isnan(value) else self.sign * value

    def save(self, state: TrainState, record: dict[str, Any], metrics: dict | None = None) -> None:
        """Saves ``state`` at its step with ``record`` (data position, ...) and eval metrics."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        metrics = metrics if metrics and self.best_metric in metrics else None
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)
            ),
            metrics=metrics,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best metric, or the latest if none has metrics."""
        scored = [(self._score(m), s) for s in self.manager.all_steps()
                  if (m := self.manager.metrics(s)) and self.best_metric in m]  # fmt: skip
        return max(scored)[1] if scored else self.latest_step()

    def restore(self, step: int, like: TrainState) -> tuple[TrainState, dict]:
        """Restores ``step`` onto the shapes, dtypes and shardings of ``like``."""
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
        )
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.record

    def restore_latest(self, like: TrainState) -> Restored | None:
        """Restores the newest checkpoint that reads back whole (None if there is none).

        Checkpoints newer than it that fail to restore are listed in ``unreadable``; the
        caller decides what to do with them (:meth:`forget`). Nothing is changed on disk.

        Raises:
          UnreadableCheckpoints: there are checkpoints, and none of them restores.
        """
        unreadable: list[tuple[int, str]] = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            if (why := _missing_part(self.step_dir(step))) is not None:
                unreadable.append((step, why))
                continue
            try:
                _quiet_reads_after_a_failed_restore()
                state, record = self.restore(step, like)
                saved = int(jax.device_get(state.step))
                if saved != step or int(record["data_position"]) != step:
                    raise ValueError(f"it holds step {saved}, data position "
                                     f"{record['data_position']}")  # fmt: skip
            except Exception as error:  # orbax and tensorstore raise many kinds
                unreadable.append((step, _reason(error)))
                continue
            return Restored(step, state, record, unreadable)
        if unreadable:
            raise UnreadableCheckpoints(unreadable)
        return None

    def step_dir(self, step: int) -> Path:
        return Path(self.manager.directory) / str(step)

    def forget(self) -> None:
        """Re-reads the step folders (after some were moved away)."""
        self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


@dataclasses.dataclass
class Restored:
    """What :meth:`Checkpointer.restore_latest` found: the step it restored, the state and
    record, and the newer checkpoints that did not read back (step, reason)."""

    step: int
    state: TrainState
    record: dict[str, Any]
    unreadable: list[tuple[int, str]]


class UnreadableCheckpoints(Exception):
    """Every checkpoint of a run failed to restore: ``failures`` holds (step, reason)."""

    def __init__(self, failures: list[tuple[int, str]]):
        super().__init__(f"no checkpoint reads back: {failures}")
        self.failures = failures


def _reason(error: Exception) -> str:
    """The first line of an error, shortened (tensorstore's run to kilobytes)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= 120 else text[:117] + "..."


def _missing_part(step_dir: Path) -> str | None:
    """Why a step folder cannot restore, for breakages seen without reading arrays (the
    reason orbax would give is less clear), else None."""
    state = step_dir / "state"
    if not (state / "_METADATA").is_file():
        return "state/_METADATA is missing"
    if any(state.glob("ocdbt.process_*")) and not (state / "manifest.ocdbt").is_file():
        return "state/manifest.ocdbt is missing"
    try:
        json.loads((step_dir / "record" / "metadata").read_text())
    except OSError:
        return "record/metadata is missing"
    except ValueError as error:
        return f"record/metadata is not valid JSON ({error})"
    return None


def _quiet_reads_after_a_failed_restore() -> None:
    """A restore that fails on one array leaves tensorstore's other reads in flight; their
    callbacks then find orbax's event loop closed, and Python prints a traceback for each
    (an "unraisable" RuntimeError). Those, and only those, are dropped."""
    previous = sys.unraisablehook
    if getattr(previous, "llama_adv_quiet", False):
        return

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    hook.llama_adv_quiet = True
    sys.unraisablehook = hook
