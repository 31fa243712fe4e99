"""The method interface and the per-batch context the train step gives a method.

A method sees only an ``objective`` closed over one batch,

    objective(params, delta, rng) -> (per_example_loss [B], outputs)

where ``delta`` is ``{stream: [B, L, D]}`` for the perturbed streams (missing streams are
unperturbed), plus a :class:`BatchInfo`. It returns parameter gradients and metrics. It
knows nothing of models, devices or datasets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc

from llama_adv.adversarial import geometry
from llama_adv.tasks import Task

Params = Any
Delta = dict[str, jax.Array]
Objective = Callable[[Params, Delta, jax.Array], tuple[jax.Array, dict]]
# descend(params, opt_state, grads) -> (params, opt_state, grad_norm): all-reduce + optimizer
Descend = Callable[[Params, Any, Params], tuple[Params, Any, jax.Array]]


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    """What a method may know about the current batch (all arrays are per-device shards).

    Attributes:
      masks: ``{stream: [B, L] float32}`` for the perturbed streams only.
      shapes: ``{stream: (B, L, D)}`` embedding shapes of those streams.
      batch: the device's shard of the batch (labels, example ids, weights).
      denominator: global (all devices) sum of the task's per-example denominators.
      step: the optimizer step being computed (scalar int array).
      axis_name: the data-parallel mesh axis, for collectives over devices.
    """

    masks: dict[str, jax.Array]
    shapes: dict[str, tuple[int, ...]]
    batch: dict[str, jax.Array]
    denominator: jax.Array
    step: jax.Array
    axis_name: str | None = "data"

    def zeros(self) -> Delta:
        """A zero perturbation for every perturbed stream."""
        return {k: jnp.zeros(s, jnp.float32) for k, s in self.shapes.items()}

    def local_mean(self, per_example: jax.Array) -> jax.Array:
        """This device's share of the global batch mean: ``sum(x) / global denominator``.

        Differentiate this; the train step sums gradients over devices.
        """
        return jnp.sum(per_example) / self.denominator

    def psum(self, x: jax.Array) -> jax.Array:
        return jax.lax.psum(x, self.axis_name) if self.axis_name else x

    def global_mean(self, per_example: jax.Array) -> jax.Array:
        """The global batch mean of a per-example quantity (for metrics)."""
        return self.psum(self.local_mean(per_example))

    def global_example_mean(self, per_example: jax.Array) -> jax.Array:
        """Mean over real examples (weight > 0) of the global batch, e.g. norms, flip rate."""
        weight = (self.batch["weight"] > 0).astype(jnp.float32)
        return self.psum(jnp.sum(per_example * weight)) / jnp.maximum(
            self.psum(jnp.sum(weight)), 1.0
        )

    def global_max(self, x: jax.Array) -> jax.Array:
        x = jnp.max(x)
        return jax.lax.pmax(x, self.axis_name) if self.axis_name else x


def perturbation_norms(delta: Delta, kind: str) -> jax.Array:
    """Per-example norm ``[B]`` of a multi-stream perturbation (streams concatenated)."""
    if kind == "linf":
        return jnp.max(jnp.stack([geometry.norm(d, "linf", "example") for d in delta.values()]), 0)
    squares = [geometry.norm(d, "l2", "example") ** 2 for d in delta.values()]
    return jnp.sqrt(sum(squares))


class Method:
    """Base class: subclasses implement :meth:`grads` (one optimizer step per batch) or
    override :meth:`update` (FreeAT-style several steps per batch).

    Attributes:
      passes: (forward, backward) passes per update, clean training = (1, 1).
    """

    passes: tuple[float, float] = (1, 1)

    def __init__(self, config: mlc.ConfigDict, task: Task):
        self.config = config
        self.task = task

    def init_state(self, params: Params, num_examples: int) -> Any:
        """Method state kept in the train state (checkpointed); ``{}`` if none."""
        return {}

    def grads(self, objective: Objective, params: Params, info: BatchInfo, rng, state):
        """Returns ``(grads, metrics, new_state)``; ``grads`` are this device's share."""
        raise NotImplementedError

    def update(self, objective, params, opt_state, info: BatchInfo, rng, state, descend: Descend):
        """One training update on a batch: ``(params, opt_state, metrics, state)``."""
        grads, metrics, state = self.grads(objective, params, info, rng, state)
        params, opt_state, grad_norm = descend(params, opt_state, grads)
        return params, opt_state, {**metrics, "grad_norm": grad_norm}, state

    def flip_rate(self, clean: dict, perturbed: dict, info: BatchInfo) -> jax.Array:
        """Fraction of examples whose prediction the perturbation changed."""
        changed = self.task.predictions(clean) != self.task.predictions(perturbed)
        if changed.ndim > 1:  # token-level tasks: fraction of changed tokens per example
            changed = jnp.mean(changed.astype(jnp.float32), axis=tuple(range(1, changed.ndim)))
        return info.global_example_mean(changed.astype(jnp.float32))
