"""Embedding-space attacks used at evaluation (and by the robustness suite).

Pure functions of a loss function of the perturbation, ``loss_fn(delta) -> [B]`` per-example
losses: they maximise each example's loss inside its own ball. Ascent loops run in
``lax.fori_loop`` so compile time does not depend on the number of steps.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from llama_adv.adversarial import geometry

Delta = dict[str, jax.Array]
LossFn = Callable[[Delta], jax.Array]


def _grad(loss_fn: LossFn, delta: Delta) -> Delta:
    # Summing per-example losses gives each example the gradient of its own loss.
    return jax.grad(lambda d: jnp.sum(loss_fn(d)))(delta)


def fgm_attack(loss_fn: LossFn, masks, shapes, *, epsilon, norm: str, scope: str) -> Delta:
    """One normalised gradient step of size ``epsilon`` from zero (FGM / FGSM for L-inf)."""
    zeros = {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}
    grads = _grad(loss_fn, zeros)
    return {
        k: geometry.ascent_step(zeros[k], g, masks[k], epsilon, epsilon, norm, scope)
        for k, g in grads.items()
    }


def pgd_attack(
    loss_fn: LossFn,
    masks,
    shapes,
    rng: jax.Array,
    *,
    epsilon,
    steps: int,
    step_size,
    norm: str,
    scope: str,
    random_start: bool = True,
) -> Delta:
    """Projected gradient ascent: ``steps`` steps of ``step_size`` inside the ``epsilon`` ball.

    Args:
      loss_fn: ``delta -> [B]`` per-example loss to maximise.
      masks: ``{stream: [B, L]}``; shapes: ``{stream: (B, L, D)}``.
      epsilon: scalar or ``[B]`` radius.

    Returns:
      ``{stream: [B, L, D]}``, inside the ball and zero on masked positions.
    """
    keys = dict(zip(shapes, jax.random.split(rng, len(shapes)), strict=True))
    delta = {
        k: geometry.project(
            geometry.init(
                keys[k], s, masks[k], "uniform" if random_start else "zero", epsilon, norm_kind=norm
            ),
            epsilon,
            norm,
            scope,
        )
        for k, s in shapes.items()
    }

    def body(_, d):
        grads = _grad(loss_fn, d)
        return {
            k: geometry.ascent_step(d[k], grads[k], masks[k], step_size, epsilon, norm, scope)
            for k in d
        }

    return jax.lax.fori_loop(0, steps, body, delta)
