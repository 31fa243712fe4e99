"""Shared set-up for the method tests: a tiny decoder on synthetic sentiment, and a toy
linear classifier whose gradients can be written out by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from _adv_helpers import single_device_setup

from llama_adv.adversarial import BatchInfo, build_method
from llama_adv.config import load_config
from llama_adv.data import load_dataset
from llama_adv.models import build_model
from llama_adv.tasks import build_task
from llama_adv.train.mesh import make_mesh, replicated, to_global
from llama_adv.train.optimizer import make_optimizer, make_schedule
from llama_adv.train.state import TrainState
from llama_adv.train.step import make_train_step


@dataclasses.dataclass
class Tiny:
    """A one-layer, 32-wide decoder classifier and the pieces a method needs."""

    config: mlc.ConfigDict
    model: object
    task: object
    dataset: object

    def params(self, seed: int = 0):
        return self.model.init(jax.random.key(seed), self.batch(4))

    def batch(self, size: int = 8, start: int = 0) -> dict:
        split = self.dataset.split("train")
        return {k: jnp.asarray(v) for k, v in split.take(np.arange(start, start + size)).items()}

    def adv(self, **overrides) -> mlc.ConfigDict:
        adv = self.config.adv.copy_and_resolve_references()
        for key, value in overrides.items():
            section, _, leaf = key.partition("__")
            if leaf:
                adv[section][leaf] = value
            else:
                adv[key] = value
        return adv

    def method(self, name: str, **overrides):
        return build_method(self.adv(method=name, **overrides), self.task)

    def setup(self, params, batch, step: int = 0, perturb_special: bool = False, model=None):
        """``(objective, info)`` for a single-device (no collective) call of a method."""
        model = self.model if model is None else model
        return single_device_setup(model, self.task, params, batch, step, perturb_special)

    def trainer(self, method, num_devices: int = 0, num_examples: int = 64, **state_kwargs):
        """``(state, step_fn, mesh)``: the real jitted data-parallel train step."""
        mesh = make_mesh(num_devices)
        schedule = make_schedule(self.config.optim, 100)
        optimizer = make_optimizer(self.config.optim, schedule)
        params = self.params()
        state = TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            method_state=method.init_state(params, num_examples, **state_kwargs),
            rng=jax.random.key_data(jax.random.key(0)),
        )
        state = jax.device_put(state, replicated(mesh))
        step = make_train_step(
            self.model, self.task, method, optimizer, schedule, mesh, method.config
        )

        def run(state, batch, index: int = 0):
            batch = to_global({k: np.asarray(v) for k, v in batch.items()}, mesh)
            return step(state, batch, jax.random.fold_in(jax.random.key(1), index))

        return state, run, step, mesh


@pytest.fixture(scope="session")
def tiny() -> Tiny:
    config = load_config(
        str(Path(__file__).resolve().parents[2] / "configs" / "quickstart.py") + ":tiny"
    )
    config.model.d_model = 32
    config.model.num_layers = 1
    config.model.num_heads = 2
    config.model.d_ff = 64
    config.data.num_train = 128
    config.data.num_eval = 16
    config.data.max_length = 12
    config.optim.warmup_steps = 0
    dataset = load_dataset(config.data)
    task = build_task("classification")
    model = build_model(config.model, head=task.head, vocab_size=dataset.vocab_size, num_classes=2)
    return Tiny(config, model, task, dataset)


class Toy:
    """``logits = (sum_l mask * (e + delta)) / n @ W``: a linear classifier on mean-pooled
    embeddings ``e`` (a fixed ``[B, L, D]`` input), so every gradient has a closed form."""

    def __init__(self, batch_size: int = 4, length: int = 5, dim: int = 3, classes: int = 2):
        rng = np.random.default_rng(0)
        self.e = jnp.asarray(rng.normal(size=(batch_size, length, dim)), jnp.float32)
        lengths = rng.integers(2, length + 1, size=batch_size)
        self.mask = jnp.asarray(np.arange(length)[None] < lengths[:, None], jnp.float32)
        self.params = {"w": jnp.asarray(rng.normal(size=(dim, classes)), jnp.float32)}
        self.batch = {
            "label": jnp.asarray(rng.integers(0, classes, size=batch_size), jnp.int32),
            "weight": jnp.ones(batch_size, jnp.float32),
            "example_id": jnp.arange(batch_size, dtype=jnp.int32),
        }

    def logits(self, params, delta):
        x = self.e + delta.get("inputs", 0.0) * self.mask[..., None]
        pooled = jnp.sum(x * self.mask[..., None], 1) / jnp.sum(self.mask, 1, keepdims=True)
        return pooled @ params["w"]

    def setup(self, task, batch=None, step: int = 0):
        batch = self.batch if batch is None else batch

        def objective(params, delta, rng, detach_embeddings=False):
            out = {"logits": self.logits(params, delta)}  # e is fixed: nothing to detach
            return task.loss(out, batch), out

        info = BatchInfo(
            masks={"inputs": self.mask},
            shapes={"inputs": self.e.shape},
            batch=batch,
            denominator=jnp.sum(batch["weight"]),
            step=jnp.asarray(step, jnp.int32),
            axis_name=None,
        )
        return objective, info


@pytest.fixture
def toy() -> Toy:
    return Toy()
