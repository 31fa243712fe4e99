"""Building blocks shared by the architectures: RMSNorm, rotary embeddings, gated MLPs."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class RMSNorm(nn.Module):
    """``x / rms(x) * scale`` computed in float32 (LLaMA and T5 v1.1 both use this)."""

    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * scale).astype(self.dtype)


def rotary_embedding(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Applies rotary position embedding in the "rotate half" layout of the HF LLaMA code.

    Args:
      x: ``[B, T, H, Dh]``.
      positions: ``[B, T]`` integer positions.
      theta: the rotary base.

    Returns:
      ``x`` rotated, same shape and dtype.
    """
    head_dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, Dh/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    half = head_dim // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


def attention_bias(query_mask: jax.Array, key_mask: jax.Array, causal: bool) -> jax.Array:
    """Additive attention bias ``[B, 1, Tq, Tk]``: 0 where allowed, a large negative elsewhere.

    A finite negative (not -inf) keeps fully masked rows (padding queries) free of NaNs.
    """
    allowed = query_mask[:, None, :, None] & key_mask[:, None, None, :]
    if causal:
        tq, tk = query_mask.shape[1], key_mask.shape[1]
        allowed = allowed & jnp.tril(jnp.ones((tq, tk), dtype=bool))[None, None]
    return jnp.where(allowed, 0.0, -1e9).astype(jnp.float32)
