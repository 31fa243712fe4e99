"""The best checkpoint by an evaluation metric is tracked and kept (orbax stores a step's
metrics only when the manager has a ``best_fn``)."""

import jax.numpy as jnp
import pytest

from llama_adv.train.checkpoint import Checkpointer
from llama_adv.train.state import TrainState


def _state(step: int) -> TrainState:
    return TrainState(
        step=jnp.asarray(step, jnp.int32), params={"w": jnp.full((3,), float(step))},
        opt_state=(), method_state=(), rng=jnp.zeros((2,), jnp.uint32),
    )  # fmt: skip


@pytest.mark.parametrize("mode,best", [("max", 2), ("min", 4)])
def test_best_checkpoint_survives_newer_ones_and_reopening(tmp_path, mode, best):
    scores = {2: 0.9, 4: 0.1, 6: 0.5, 8: 0.6}  # step -> accuracy
    ckpt = Checkpointer(tmp_path, keep=1, best_metric="accuracy", best_mode=mode)
    for step, accuracy in scores.items():
        ckpt.save(_state(step), {"data_position": step}, {"accuracy": accuracy})
    ckpt.close()
    reopened = Checkpointer(tmp_path, keep=1, best_metric="accuracy", best_mode=mode,
                            read_only=True)  # fmt: skip
    assert reopened.best_step() == best
    assert set(reopened.manager.all_steps()) == {best, 8}  # the best and the latest
    state, _ = reopened.restore(best, _state(0))
    assert float(state.params["w"][0]) == best
    reopened.close()
