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


def _step(delta, grads, masks, step_size, epsilon, norm, scope, stream_geometry):
    """Normalised ascent step, then projection onto the ``epsilon`` ball, masked."""
    unit = geometry.normalize_streams(grads, masks, norm, scope, "sign", stream_geometry)
    moved = {k: d + geometry.broadcast(step_size) * unit[k] for k, d in delta.items()}
    moved = geometry.project_streams(moved, epsilon, norm, scope, stream_geometry)
    return {k: geometry.apply_mask(v, masks[k]) for k, v in moved.items()}


def fgm_attack(
    loss_fn: LossFn, masks, shapes, *, epsilon, norm: str, scope: str, stream_geometry="joint"
) -> Delta:
    """One normalised gradient step of size ``epsilon`` from zero (FGM / FGSM for L-inf).

    ``stream_geometry``: ``joint`` (the radius bounds all streams together, as in
    training) or ``per_stream``.
    """
    zeros = {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}
    grads = _grad(loss_fn, zeros)
    return _step(zeros, grads, masks, epsilon, epsilon, norm, scope, stream_geometry)


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
    stream_geometry: str = "joint",
) -> Delta:
    """Projected gradient ascent: ``steps`` steps of ``step_size`` inside the ``epsilon`` ball.

    Args:
      loss_fn: ``delta -> [B]`` per-example loss to maximise.
      masks: ``{stream: [B, L]}``; shapes: ``{stream: (B, L, D)}``.
      epsilon: scalar or ``[B]`` radius; it bounds all streams together under
        ``stream_geometry = joint`` (the default, as in training), each under
        ``per_stream``.

    Returns:
      ``{stream: [B, L, D]}``, inside the ball and zero on masked positions.
    """
    keys = dict(zip(shapes, jax.random.split(rng, len(shapes)), strict=True))
    delta = {
        k: geometry.init(
            keys[k], s, masks[k], "uniform" if random_start else "zero", epsilon, norm_kind=norm
        )
        for k, s in shapes.items()
    }
    delta = geometry.project_streams(delta, epsilon, norm, scope, stream_geometry)

    def body(_, d):
        return _step(d, _grad(loss_fn, d), masks, step_size, epsilon, norm, scope, stream_geometry)

    return jax.lax.fori_loop(0, steps, body, delta)
