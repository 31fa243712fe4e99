"""Checkpoints with orbax's CheckpointManager: the train state plus a JSON record of the
step and data position; the last N are kept, and the best by an evaluation metric."""

from __future__ import annotations

import math
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
    """

    def __init__(
        self,
        directory: Path,
        keep: int,
        best_metric: str = "",
        best_mode: str = "max",
        read_only: bool = False,
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
                create=not read_only,
                read_only=read_only,
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

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
