"""Perturbation geometry shared by training methods and robustness attacks.

Every function works on one stream: a perturbation ``delta`` ``[B, L, D]`` and a mask
``[B, L]`` (1 where a perturbation may go). Radii may be scalars or per-example ``[B]``.

Scope ``"example"`` treats the whole masked ``[L, D]`` sequence as one vector (Miyato,
FreeLB); scope ``"token"`` treats each ``D`` row separately (SMART, ALUM).

Several streams (``{stream: [B, L, D]}``, the ``*_streams`` functions): under
``stream_geometry = "joint"`` (the default) an example's streams are one vector, as if
concatenated, so the radius bounds them together; ``"per_stream"`` bounds each stream
alone. Per-token scope is the same either way (each token is its own vector).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

NORMS = ("l2", "linf")
SCOPES = ("example", "token")
# L-inf ascent step: sign(g) (FGSM, PGD) or g / ||g||_inf in the scope (FreeLB, ALUM).
LINF_STEPS = ("sign", "max_norm")
TINY = 1e-12


def _reduce_axes(scope: str) -> tuple[int, ...]:
    return (1, 2) if scope == "example" else (2,)


def _expand(radius: jax.Array | float, scope: str) -> jax.Array:
    """Broadcasts a scalar or ``[B]`` radius against ``[B, L, D]``."""
    radius = jnp.asarray(radius, jnp.float32)
    return radius[:, None, None] if radius.ndim == 1 else radius


def broadcast(radius: jax.Array | float) -> jax.Array:
    """A scalar or per-example ``[B]`` radius (or step size) shaped to scale ``[B, L, D]``."""
    return _expand(radius, "example")


def apply_mask(delta: jax.Array, mask: jax.Array) -> jax.Array:
    """Zeroes ``delta`` on masked-out positions."""
    return delta * mask[..., None].astype(delta.dtype)


def norm(delta: jax.Array, kind: str, scope: str) -> jax.Array:
    """Norm of ``delta``: ``[B]`` for scope "example", ``[B, L]`` for scope "token"."""
    axes = _reduce_axes(scope)
    delta = delta.astype(jnp.float32)
    if kind == "l2":
        return jnp.sqrt(jnp.sum(delta * delta, axis=axes))
    return jnp.max(jnp.abs(delta), axis=axes)


def _per_scope(size: jax.Array, scope: str) -> jax.Array:
    """Broadcasts a ``[B]`` (example) or ``[B, L]`` (token) norm against ``[B, L, D]``."""
    return size[:, None, None] if scope == "example" else size[..., None]


def normalize(
    grad: jax.Array, mask: jax.Array, kind: str, scope: str, linf_step: str = "sign"
) -> jax.Array:
    """Steepest-ascent direction of unit size.

    L2: ``g / ||g||_2``. L-inf: ``sign(g)`` (``linf_step="sign"``) or ``g / ||g||_inf``
    (``"max_norm"``: FreeLB's L-inf code, ALUM's Algorithm 1), both with L-inf norm 1 in
    ``scope`` (the max over the example's sequence or over each token's row).
    """
    grad = apply_mask(grad.astype(jnp.float32), mask)
    if kind == "linf":
        if linf_step == "sign":
            return jnp.sign(grad)
        if linf_step != "max_norm":
            raise ValueError(f"unknown linf_step {linf_step!r}; valid: {LINF_STEPS}")
        return grad / jnp.maximum(_per_scope(norm(grad, "linf", scope), scope), TINY)
    return grad / jnp.maximum(_per_scope(norm(grad, "l2", scope), scope), TINY)


def to_sphere(delta: jax.Array, mask: jax.Array, radius, kind: str, scope: str) -> jax.Array:
    """Rescales ``delta`` onto the ``radius`` sphere (not ball) of its scope, masked.

    The public SMART/ALUM code does this per token with L-inf and radius 1 instead of
    projecting onto a ball; zero rows stay zero.
    """
    delta = apply_mask(delta.astype(jnp.float32), mask)
    size = _per_scope(norm(delta, kind, scope), scope)
    return delta * (_expand(radius, scope) / jnp.maximum(size, TINY))


def exclude_tokens(mask: jax.Array, tokens: jax.Array, token_ids) -> jax.Array:
    """``mask`` ``[B, L]`` with positions holding any of ``token_ids`` (e.g. BOS, EOS) off."""
    keep = jnp.ones(tokens.shape, bool)
    for token in token_ids:
        keep &= tokens != token
    return mask * keep.astype(mask.dtype)


def project(delta: jax.Array, radius, kind: str, scope: str) -> jax.Array:
    """Projects ``delta`` onto the ``radius`` ball (L2 rescale, L-inf clip).

    A radius of ``inf`` leaves ``delta`` unbounded.
    """
    radius = _expand(radius, scope)
    if kind == "linf":
        return jnp.clip(delta, -radius, radius)
    size = _per_scope(norm(delta, "l2", scope), scope)
    scale = jnp.minimum(1.0, radius / jnp.maximum(size, TINY))
    return delta * scale


def ascent_step(
    delta, grad, mask, step_size, radius, kind: str, scope: str, linf_step: str = "sign"
) -> jax.Array:
    """One projected ascent step: ``project(delta + step_size * normalize(grad))``, masked."""
    step = _expand(step_size, scope) * normalize(grad, mask, kind, scope, linf_step)
    return apply_mask(project(delta + step, radius, kind, scope), mask)


def sphere_step(delta, grad, mask, step_size, radius, kind: str, scope: str) -> jax.Array:
    """SMART/ALUM code's step: raw gradient step, then rescaled onto the ``radius`` sphere."""
    grad = apply_mask(grad.astype(jnp.float32), mask)
    return to_sphere(delta + _expand(step_size, scope) * grad, mask, radius, kind, scope)


def example_noise(rng, shape, kind: str, rows: jax.Array | None = None) -> jax.Array:
    """``[B, ...]`` noise, ``normal`` (N(0, 1)) or ``uniform`` (U(-1, 1)), each example's
    drawn from its own key ``fold_in(rng, row)``.

    ``rows`` ``[B]`` are the examples' rows in the step's whole batch (None: ``0..B-1``),
    so a microbatch draws exactly the noise its examples get in the whole batch
    (``train.microbatches``).
    """
    rows = jnp.arange(shape[0]) if rows is None else rows
    if kind == "normal":
        draw = functools.partial(jax.random.normal, shape=shape[1:])
    elif kind == "uniform":
        draw = functools.partial(jax.random.uniform, shape=shape[1:], minval=-1.0, maxval=1.0)
    else:
        raise ValueError(f"unknown noise {kind!r}; valid: normal, uniform")
    return jax.vmap(lambda row: draw(jax.random.fold_in(rng, row)))(rows)


def init(rng, shape, mask, kind: str, magnitude, *, norm_kind: str = "l2", rows=None) -> jax.Array:
    """Initial perturbation.

    Args:
      kind: ``zero``; ``uniform`` (FreeLB: L2 ``U(-1,1) * mag / sqrt(len * D)``, L-inf
        ``U(-mag, mag)``); ``normal`` (``N(0, mag^2)``, SMART/ALUM/R3F use 1e-5).
      magnitude: scalar or ``[B]``.
      norm_kind: picks the uniform variant.
      rows: the examples' rows in the step's batch (:func:`example_noise`).

    Returns:
      ``[B, L, D]`` float32, zero on masked positions.
    """
    mask = mask.astype(jnp.float32)
    if kind == "zero":
        return jnp.zeros(shape, jnp.float32)
    magnitude = _expand(magnitude, "example")
    if kind == "normal":
        return apply_mask(example_noise(rng, shape, "normal", rows) * magnitude, mask)
    if kind == "uniform":
        noise = example_noise(rng, shape, "uniform", rows)
        if norm_kind == "linf":
            return apply_mask(noise * magnitude, mask)
        length = jnp.sum(mask, axis=1)[:, None, None]
        scale = magnitude / jnp.sqrt(jnp.maximum(length * shape[-1], 1.0))
        return apply_mask(noise * scale, mask)
    raise ValueError(f"unknown init {kind!r}; valid: zero, uniform, normal")


STREAM_GEOMETRIES = ("joint", "per_stream")


def stream_sizes(delta: dict, kind: str, scope: str, stream_geometry: str = "joint") -> dict:
    """Each stream's norm shaped to scale ``[B, L, D]``: ``[B, 1, 1]`` (example scope;
    under ``joint`` the norm of all streams together) or ``[B, L, 1]`` (token scope)."""
    sizes = {k: _per_scope(norm(v, kind, scope), scope) for k, v in delta.items()}
    if stream_geometry == "per_stream" or scope == "token" or len(sizes) < 2:
        return sizes
    if stream_geometry != "joint":
        raise ValueError(f"unknown stream_geometry {stream_geometry!r}; valid: {STREAM_GEOMETRIES}")
    values = list(sizes.values())
    if kind == "l2":
        total = jnp.sqrt(sum(v * v for v in values))
    else:
        total = functools.reduce(jnp.maximum, values)
    return {k: total for k in sizes}


def bounded_norms(delta: dict, kind: str, scope: str, stream_geometry: str = "joint"):
    """Per example ``[B]``: the largest of the norms the radius bounds (the joint norm;
    per stream: the largest stream's; per token: the largest token's)."""
    sizes = stream_sizes(delta, kind, scope, stream_geometry)
    per_example = [jnp.max(v, axis=(1, 2)) for v in sizes.values()]
    return functools.reduce(jnp.maximum, per_example)


def normalize_streams(
    grads: dict, masks: dict, kind, scope, linf_step="sign", stream_geometry="joint"
):
    """:func:`normalize` of several streams: unit size in ``stream_geometry``."""
    grads = {k: apply_mask(g.astype(jnp.float32), masks[k]) for k, g in grads.items()}
    if kind == "linf" and linf_step == "sign":
        return {k: jnp.sign(g) for k, g in grads.items()}
    if kind == "linf" and linf_step != "max_norm":
        raise ValueError(f"unknown linf_step {linf_step!r}; valid: {LINF_STEPS}")
    sizes = stream_sizes(grads, kind, scope, stream_geometry)
    return {k: g / jnp.maximum(sizes[k], TINY) for k, g in grads.items()}


def project_streams(delta: dict, radius, kind: str, scope: str, stream_geometry="joint"):
    """:func:`project` of several streams onto the ``radius`` ball of ``stream_geometry``."""
    if kind == "linf":  # element-wise: the joint and per-stream balls are the same box
        return {k: project(v, radius, kind, scope) for k, v in delta.items()}
    sizes = stream_sizes(delta, "l2", scope, stream_geometry)
    r = _expand(radius, scope)
    return {k: v * jnp.minimum(1.0, r / jnp.maximum(sizes[k], TINY)) for k, v in delta.items()}


def to_sphere_streams(delta: dict, masks: dict, radius, kind, scope, stream_geometry="joint"):
    """:func:`to_sphere` of several streams (one sphere for all of them under joint)."""
    delta = {k: apply_mask(v.astype(jnp.float32), masks[k]) for k, v in delta.items()}
    sizes = stream_sizes(delta, kind, scope, stream_geometry)
    r = _expand(radius, scope)
    return {k: v * (r / jnp.maximum(sizes[k], TINY)) for k, v in delta.items()}
