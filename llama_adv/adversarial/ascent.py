"""Multi-stream inner maximisation: the one attack engine of the training methods and of
the evaluation attacks (``adversarial/attacks.py``, ``train/evaluate.py``, the robustness
suite), so that both share the start, step, projection and step-size rule.

A perturbation is ``{stream: [B, L, D]}``; masks are ``{stream: [B, L]}``. The ascent loop
is a ``lax.scan`` over step indices, so compile time does not grow with the number of
steps, and it can return every iterate (for tests and diagnostics).

This module reads :class:`~llama_adv.adversarial.base.Options` but does not import
``base`` at run time, so ``base`` may import it (e.g. :func:`step_size`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from llama_adv.adversarial import geometry

if TYPE_CHECKING:
    from llama_adv.adversarial.base import Options

Delta = dict[str, jax.Array]
# (delta, rng) -> per-example [B] quantity to maximise; rng None: a deterministic pass
InnerLoss = Callable[[Delta, jax.Array | None], jax.Array]
# Madry et al.'s step size: 2.5 * radius / steps
MADRY_FACTOR = 2.5


def default_step_size(radius, steps: int) -> jax.Array:
    """Madry et al.'s step size ``2.5 * radius / steps`` (float32; ``steps`` below 1 counts
    as 1), the default of the training methods and of the evaluation attacks."""
    return MADRY_FACTOR * jnp.asarray(radius, jnp.float32) / max(int(steps), 1)


def step_size(opt: Options, radius, unit=1.0) -> jax.Array:
    """The ascent step size: ``opt.step_size`` times ``unit`` (the radius unit) when set
    (> 0), else :func:`default_step_size` of ``radius`` (in absolute units already) and
    ``opt.steps``."""
    if opt.step_size > 0:
        return jnp.asarray(opt.step_size, jnp.float32) * unit
    return default_step_size(radius, opt.steps)


def init(
    rng: jax.Array,
    masks: dict,
    shapes: dict,
    opt: Options,
    magnitude,
    radius,
    *,
    project=True,
    rows: jax.Array | None = None,
) -> Delta:
    """The starting perturbation of ``opt.init`` kind, inside the ball, zero where masked.

    Args:
      magnitude: init magnitude (scalar or ``[B]``); for ``uniform`` under L2 the FreeLB
        scaling ``U(-1, 1) * mag / sqrt(len * D)`` applies (``len * D`` counted over all
        streams together under ``opt.stream_geometry = joint``), under L-inf
        ``U(-mag, mag)``.
      radius: scalar or ``[B]``; the start is projected onto this ball (unless
        ``project=False``: FreeLB's reference starts unprojected).
      rows: ``[B]`` the examples' rows in the step's batch, so a microbatch draws its
        examples' starts (:func:`geometry.example_noise`); None: ``0..B-1``.
    """
    keys = dict(zip(shapes, jax.random.split(rng, len(shapes)), strict=True))
    out = {
        k: geometry.init(
            keys[k], shape, masks[k], opt.init, magnitude, norm_kind=opt.norm, rows=rows
        )
        for k, shape in shapes.items()
    }
    joint = opt.stream_geometry == "joint" and len(out) > 1
    if joint and opt.init == "uniform" and opt.norm == "l2":  # FreeLB's len * D, all streams
        sizes = {k: jnp.sum(masks[k], axis=1) * shapes[k][-1] for k in out}
        total = jnp.maximum(sum(sizes.values()), 1.0)
        out = {
            k: v * jnp.sqrt(jnp.maximum(sizes[k], 1.0) / total)[:, None, None]
            for k, v in out.items()
        }
    if not project:
        return out
    return geometry.project_streams(out, radius, opt.norm, opt.scope, opt.stream_geometry)


def step(delta: Delta, grads: Delta, masks: dict, opt: Options, step_size, radius) -> Delta:
    """One ascent step on every stream: normalised step (L-inf: ``opt.linf_step``) and
    projection onto the ball, or (``opt.projection == "sphere"``) raw step rescaled onto
    the sphere; both in ``opt.stream_geometry`` (joint: one ball for all streams)."""
    size = geometry.broadcast(step_size)
    if opt.projection == "sphere":
        moved = {
            k: delta[k] + size * geometry.apply_mask(grads[k].astype(jnp.float32), masks[k])
            for k in delta
        }
        return geometry.to_sphere_streams(
            moved, masks, radius, opt.norm, opt.scope, opt.stream_geometry
        )
    directions = geometry.normalize_streams(
        grads, masks, opt.norm, opt.scope, opt.linf_step, opt.stream_geometry
    )
    moved = {k: delta[k] + size * directions[k] for k in delta}
    projected = geometry.project_streams(moved, radius, opt.norm, opt.scope, opt.stream_geometry)
    return {k: geometry.apply_mask(v, masks[k]) for k, v in projected.items()}


def grad(inner: InnerLoss, delta: Delta, rng: jax.Array) -> Delta:
    """Gradient of each example's own inner loss with respect to its perturbation."""
    # Summing per-example losses gives each example the gradient of its own loss; only
    # the input gradient is taken, so XLA drops the parameter-gradient matmuls.
    return jax.grad(lambda d: jnp.sum(inner(d, rng)))(delta)


def run(
    inner: InnerLoss,
    delta: Delta,
    masks: dict,
    opt: Options,
    *,
    steps: int,
    step_size,
    radius,
    rng_at: Callable[[jax.Array], jax.Array],
    record: bool = False,
):
    """``steps`` projected ascent steps from ``delta``.

    Args:
      rng_at: step index -> dropout key of that step's forward pass.
      record: also return every iterate, stacked on a leading ``[steps]`` axis.

    Returns:
      the final perturbation, or ``(final, iterates)`` when ``record``.
    """

    def body(d, t):
        new = step(d, grad(inner, d, rng_at(t)), masks, opt, step_size, radius)
        return new, (new if record else None)

    final, iterates = jax.lax.scan(body, delta, jnp.arange(steps))
    return (final, iterates) if record else final


def pgd(
    inner: InnerLoss,
    rng: jax.Array,
    masks: dict,
    shapes: dict,
    opt: Options,
    *,
    radius,
    step_size,
    rng_at: Callable[[jax.Array], jax.Array | None],
    record: bool = False,
    rows: jax.Array | None = None,
):
    """Madry et al.'s PGD: an ``opt.init`` start drawn with ``rng`` (magnitude
    ``opt.init_magnitude``, ``None``: the radius), projected onto the ``radius`` ball, then
    ``opt.steps`` steps of :func:`run`. The ``pgd`` training method and the evaluation PGD
    attack are both this function.

    Args:
      rng: the random start's key (the training method passes its update key folded
        with ``NOISE_STREAM``; an evaluation attack its own key).
      rng_at: step index -> dropout key of that step's forward pass (``None``:
        deterministic).
      rows: the examples' rows in the step's batch (:func:`init`).
    """
    magnitude = radius if opt.init_magnitude is None else opt.init_magnitude
    start = init(rng, masks, shapes, opt, magnitude, radius, rows=rows)
    return run(
        inner,
        start,
        masks,
        opt,
        steps=opt.steps,
        step_size=step_size,
        radius=radius,
        rng_at=rng_at,
        record=record,
    )


def stop(delta: Delta) -> Delta:
    return jax.tree.map(jax.lax.stop_gradient, delta)
