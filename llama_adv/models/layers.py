"""Building blocks shared by the architectures: RMSNorm, rotary embeddings, gated MLPs."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# The mesh axes the batch is split over (train/mesh.py BATCH_AXES).
BATCH_AXES = ("data", "fsdp")


def constrain_batch(x: jax.Array) -> jax.Array:
    """``x`` ``[B, ...]`` pinned to the batch split of the current mesh (``jax.set_mesh``),
    unchanged when there is none. At each block's input it keeps activations split by
    example while FSDP splits the weights along d_model: without it XLA may resolve that
    conflict by splitting activations along d_model and holding the whole batch on every
    device."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    if not axes:
        return x
    return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(axes))


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


def relative_position_bucket(
    relative_position: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """T5's bucketing of ``key_position - query_position`` (any integer shape, same out).

    Half of the buckets hold exact small distances, the other half logarithmically wider
    ranges up to ``max_distance``; farther distances share the last bucket. Bidirectional
    attention spends half the buckets on each direction; causal attention only looks back.
    """
    bucket = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    # The maximum keeps log() finite; those entries take the exact branch anyway.
    scaled = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
    scaled = scaled / jnp.log(max_distance / max_exact) * (num_buckets - max_exact)
    large = jnp.minimum(max_exact + scaled.astype(relative_position.dtype), num_buckets - 1)
    return bucket + jnp.where(distance < max_exact, distance, large)


def causal_bias(
    query_positions: jax.Array, key_positions: jax.Array, key_mask: jax.Array
) -> jax.Array:
    """Additive bias ``[B, 1, Tq, Tk]`` for cached decoding: keys at or before each query.

    Args:
      query_positions: ``[Tq]`` indices of the queries in the full sequence.
      key_positions: ``[Tk]`` indices of the keys (the cache slots).
      key_mask: ``[B, Tk]`` true on real, already written keys.
    """
    allowed = key_positions[None, :] <= query_positions[:, None]
    allowed = allowed[None, None] & key_mask[:, None, None, :]
    return jnp.where(allowed, 0.0, -1e9).astype(jnp.float32)


def update_kv_cache(
    module: nn.Module, key: jax.Array, value: jax.Array, index: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Writes ``key``/``value`` ``[B, t, H, Dh]`` into ``module``'s cache at ``index``.

    The cache (collection ``"cache"``) is created zero-filled with the shape of the first
    call, which is made on a full-length dummy (see ``init_cache`` of the models); later
    calls write ``t`` new positions and return the whole cache ``[B, L, H, Dh]``.
    """
    initialized = module.has_variable("cache", "cached_key")
    cached_key = module.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
    cached_value = module.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
    if not initialized:
        return key, value
    start = (0, index, 0, 0)
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
    return cached_key.value, cached_value.value


def add_latent(x: jax.Array, delta: jax.Array) -> jax.Array:
    """The residual stream ``x`` ``[B, L, d_model]`` plus a latent perturbation ``delta``
    (same shape, cast to ``x``'s dtype and kept split by example like ``x``)."""
    return x + constrain_batch(delta).astype(x.dtype)


class _PerturbedBlock(nn.Module):
    """One scanned block followed by the latent perturbation of its depth, if any.

    The block shares this module's scope, so the parameters (and caches) keep the names
    and stacked layout of the unperturbed scan.

    Attributes:
      block: the block class (possibly ``nn.remat``-wrapped).
      fields: the block's fields as ``(name, value)`` pairs.
      depths: the sorted depths ``[K]`` that carry a perturbation.
    """

    block: type[nn.Module]
    fields: tuple[tuple[str, object], ...]
    depths: tuple[int, ...]

    def setup(self):
        self.inner = self.block(**dict(self.fields), scanned=True)
        nn.share_scope(self, self.inner)

    def __call__(self, x, layer, deltas, *args):
        """``layer``: this block's index (scalar int); ``deltas``: ``[K, B, L, d_model]``."""
        x, _ = self.inner(x, *args)
        for k, depth in enumerate(self.depths):
            # where, not a multiply: the other layers add an exact 0 (as unrolled, where
            # they add nothing), whatever the perturbation holds
            x = add_latent(x, jnp.where(layer == depth, deltas[k], 0))
        return x, None


def run_stack(
    block: type[nn.Module],
    num_layers: int,
    x: jax.Array,
    args: tuple,
    *,
    scan: bool,
    remat: bool,
    latents: dict[int, jax.Array] | None = None,
    **block_fields,
) -> jax.Array:
    """Applies ``num_layers`` copies of ``block`` to ``x`` (call inside a compact method).

    Unrolled, the blocks are named ``block_{i}``. With ``scan`` one ``nn.scan`` named
    ``blocks`` runs them, parameters (and caches) stacked on a leading layer axis, so
    compile time does not grow with depth. ``remat`` recomputes each block's activations
    in the backward pass. ``args`` (arrays) are the same for every layer; static options
    are module fields so that neither transform needs static arguments.

    ``latents`` ``{N: [B, L, d_model]}`` are added to the residual stream after block
    ``N`` (0-based; the ``layer:N`` streams of ``adv.streams``). Scanned, the perturbations
    are broadcast to every layer as one ``[K, B, L, d_model]`` stack and each layer adds
    the one of its depth, so the scan (and the parameter layout) stays one piece and no
    per-layer ``[num_layers, B, L, d_model]`` input is materialised.
    """
    latents = latents or {}
    if any(not 0 <= depth < num_layers for depth in latents):
        raise ValueError(f"latent depths {sorted(latents)} outside 0..{num_layers - 1}")
    cls = nn.remat(block, prevent_cse=not scan) if remat else block
    if not scan:
        for i in range(num_layers):
            x = cls(**block_fields, name=f"block_{i}")(x, *args)
            if i in latents:
                x = add_latent(x, latents[i])
        return x
    split_rngs = {"params": True, "dropout": True}
    variable_axes = {"params": 0, "cache": 0}
    if not latents:
        scanned = nn.scan(
            cls, variable_axes=variable_axes, split_rngs=split_rngs,
            in_axes=(nn.broadcast,) * len(args), length=num_layers,
        )  # fmt: skip
        x, _ = scanned(**block_fields, scanned=True, name="blocks")(x, *args)
        return x
    depths = tuple(sorted(latents))
    scanned = nn.scan(
        _PerturbedBlock, variable_axes=variable_axes, split_rngs=split_rngs,
        in_axes=(0, nn.broadcast) + (nn.broadcast,) * len(args), length=num_layers,
    )  # fmt: skip
    fields = tuple(sorted(block_fields.items()))
    deltas = jnp.stack([latents[d] for d in depths])
    module = scanned(cls, fields, depths, name="blocks")
    x, _ = module(x, jnp.arange(num_layers), deltas, *args)
    return x


def stack_blocks(params: dict, num_layers: int) -> dict:
    """Unrolled ``block_{i}`` subtrees -> one ``blocks`` subtree with a leading layer axis."""
    out = {k: v for k, v in params.items() if not k.startswith("block_")}
    layers = [params[f"block_{i}"] for i in range(num_layers)]
    out["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
    return out


def unstack_blocks(params: dict) -> dict:
    """Inverse of :func:`stack_blocks`."""
    out = {k: v for k, v in params.items() if k != "blocks"}
    num_layers = jax.tree.leaves(params["blocks"])[0].shape[0]
    for i in range(num_layers):
        out[f"block_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["blocks"])
    return out
