"""The real jitted training step, called by hand on a small quickstart model: the runs the
mesh and microbatch tests compare."""

from __future__ import annotations

import jax
import ml_collections as mlc
import numpy as np

from llama_adv.data.pipeline import TrainStream
from llama_adv.train.loop import create_state
from llama_adv.train.mesh import mesh_from_config, to_global
from llama_adv.train.optimizer import make_optimizer, make_schedule
from llama_adv.train.setup import build_experiment
from llama_adv.train.step import make_train_step


def small_config(quickstart_config, method: str, *overrides: str, devices: int = 1,
                 mesh: dict | None = None) -> mlc.ConfigDict:  # fmt: skip
    """``configs/quickstart.py:tiny`` at d_model 32 and batch 8 with ``adv.method=method``
    on ``devices`` devices laid out as ``mesh`` (axis sizes; data 1 unless given)."""
    config = quickstart_config("tiny", f"adv.method={method}", *overrides)
    config.model.d_model, config.model.num_heads, config.model.d_ff = 32, 4, 64
    config.train.batch_size, config.train.num_devices = 8, devices
    for axis, size in {"data": 1, **(mesh or {})}.items():
        config.mesh[axis] = size
    return config


def train_steps(config: mlc.ConfigDict, steps: int, seed: int, microbatches: int = 1):
    """``(losses [steps], final state)`` of ``steps`` calls of the jitted step; step ``i``
    draws with ``fold_in(key(seed), i)``."""
    exp = build_experiment(config)
    mesh = mesh_from_config(config)
    schedule = make_schedule(config.optim, steps)
    optimizer = make_optimizer(config.optim, schedule)
    state = create_state(exp, config, optimizer, mesh)
    step = make_train_step(
        exp.model, exp.task, exp.method, optimizer, schedule, mesh, config.adv,
        state_shardings=jax.tree.map(lambda x: x.sharding, state), microbatches=microbatches,
    )  # fmt: skip
    stream = TrainStream(exp.dataset.split("train"), config.train.batch_size, config.train.seed)
    key, losses = jax.random.key(seed), []
    for i in range(steps):
        state, metrics = step(state, to_global(stream.batch(i), mesh), jax.random.fold_in(key, i))
        losses.append(metrics["loss"])
    return np.asarray(jax.device_get(losses)), state
