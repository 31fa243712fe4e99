"""Building blocks shared by the architectures: RMSNorm, rotary embeddings, attention
(with its key/value cache), the gated MLP, the block stack, and the logical axes of the
parameters these layers create (:data:`LAYER_AXES`, read by ``train/partitioning.py``)."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

# Logical axes of the kernels of Attention and GatedMLP, by projection name, as
# llama_adv/train/partitioning.py maps them onto the mesh (one source of truth).
ATTENTION_AXES: dict[str, tuple[str, ...]] = {
    "query": ("embed", "heads", "head_dim"),
    "key": ("embed", "kv_heads", "head_dim"),
    "value": ("embed", "kv_heads", "head_dim"),
    "out": ("heads", "head_dim", "embed"),
}
MLP_AXES: dict[str, tuple[str, ...]] = {
    "gate": ("embed", "mlp"),
    "up": ("embed", "mlp"),
    "down": ("mlp", "embed"),
}
# (module name, leaf name) -> logical axes of the unstacked leaf
LAYER_AXES: dict[tuple[str, str], tuple[str, ...]] = {
    (name, "kernel"): axes for name, axes in {**ATTENTION_AXES, **MLP_AXES}.items()
}

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


class Attention(nn.Module):
    """Multi-head dot-product attention without biases, for both architectures.

    LLaMA: rotary positions, grouped-query heads, scores scaled by ``1/sqrt(head_dim)``,
    no dropout on the attention weights. T5: no rotary (positions come in ``bias``, the
    relative position bias), ``num_kv_heads = num_heads``, unscaled scores (T5 folds the
    scale into the query's initialisation), dropout on the weights, ``context`` for
    cross-attention.

    Scores are computed in float32: ``q.k`` (, ``/ sqrt(head_dim)``) ``+ bias``, softmax,
    (weights dropout,) cast to ``dtype``, weighted sum of the values, ``out``
    projection, dropout.

    Parameters (logical axes, :data:`ATTENTION_AXES`): ``query/kernel`` ``[d_model,
    num_heads, head_dim]`` [embed, heads, head_dim]; ``key/kernel`` and ``value/kernel``
    ``[d_model, num_kv_heads, head_dim]`` [embed, kv_heads, head_dim]; ``out/kernel``
    ``[num_heads, head_dim, d_model]`` [heads, head_dim, embed]. With ``decode`` the cache
    collection holds ``cached_key``/``cached_value`` ``[B, L, num_kv_heads, head_dim]``.

    Attributes:
      num_heads: query heads.
      head_dim: width of each head.
      d_model: width of the output (the residual stream).
      num_kv_heads: key/value heads (grouped-query attention: each serves
        ``num_heads // num_kv_heads`` query heads); None: ``num_heads``.
      dtype: the compute dtype of the projections and the weighted sum.
      dropout_rate: dropout on the output (and on the weights with ``weights_dropout``).
      weights_dropout: also drop attention weights (T5; LLaMA does not).
      rope_theta: the rotary base; None or 0: no rotary embedding (T5). Rotary needs
        ``positions`` and is for self-attention only.
      scale_queries: divide the scores by ``sqrt(head_dim)`` (LLaMA; T5 does not).
      query_init, key_init, value_init, out_init: kernel initialisers of the projections;
        None: Flax's default (``lecun_normal``).
      deterministic: no dropout.
      decode: append the keys/values to the cache at ``index`` and attend to the whole
        cache (self-attention in cached decoding; see :func:`update_kv_cache`).
    """

    num_heads: int
    head_dim: int
    d_model: int
    num_kv_heads: int | None = None
    dtype: jnp.dtype = jnp.float32
    dropout_rate: float = 0.0
    weights_dropout: bool = False
    rope_theta: float | None = None
    scale_queries: bool = True
    query_init: Initializer | None = None
    key_init: Initializer | None = None
    value_init: Initializer | None = None
    out_init: Initializer | None = None
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        bias: jax.Array,
        *,
        context: jax.Array | None = None,
        positions: jax.Array | None = None,
        index: jax.Array | int = 0,
    ) -> jax.Array:
        """``x`` ``[B, Tq, d]`` attends to ``context`` ``[B, Tk, d]`` (default ``x``).

        Args:
          x: the queries' input ``[B, Tq, d]``.
          bias: additive float32 bias broadcastable to ``[B, H, Tq, Tk]`` (masking,
            relative positions).
          context: the keys' and values' input (cross-attention); None: ``x``.
          positions: ``[B, Tq]`` integer positions for the rotary embedding.
          index: with ``decode``, the cache slot of the first of the ``Tq`` new tokens.

        Returns:
          ``[B, Tq, d_model]``.
        """
        rotary = bool(self.rope_theta)
        if rotary and (positions is None or context is not None):
            raise ValueError("rotary attention needs positions and is self-attention only")
        context = x if context is None else context
        num_kv_heads = self.num_kv_heads or self.num_heads

        def project(heads, init, name, inputs):
            kwargs = {} if init is None else {"kernel_init": init}
            return nn.DenseGeneral(
                (heads, self.head_dim), use_bias=False, dtype=self.dtype, name=name, **kwargs
            )(inputs)

        q = project(self.num_heads, self.query_init, "query", x)
        k = project(num_kv_heads, self.key_init, "key", context)
        if rotary:
            q = rotary_embedding(q, positions, self.rope_theta)
            k = rotary_embedding(k, positions, self.rope_theta)
        v = project(num_kv_heads, self.value_init, "value", context)
        if self.decode:
            k, v = update_kv_cache(self, k, v, index)
        groups = self.num_heads // num_kv_heads
        if groups > 1:
            k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        if self.scale_queries:
            scores = scores / jnp.sqrt(self.head_dim).astype(jnp.float32)
        weights = jax.nn.softmax(scores + bias, axis=-1)
        if self.weights_dropout:
            weights = nn.Dropout(self.dropout_rate)(weights, deterministic=self.deterministic)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), v)
        kwargs = {} if self.out_init is None else {"kernel_init": self.out_init}
        out = nn.DenseGeneral(
            self.d_model, axis=(-2, -1), use_bias=False, dtype=self.dtype, name="out", **kwargs
        )(out)
        return nn.Dropout(self.dropout_rate)(out, deterministic=self.deterministic)


class GatedMLP(nn.Module):
    """``down(activation(gate(x)) * up(x))`` without biases, then dropout: SwiGLU (LLaMA,
    ``activation=nn.silu``) or T5 v1.1's gated GELU (tanh-approximated ``gelu``, with
    ``hidden_dropout``).

    Parameters (logical axes, :data:`MLP_AXES`): ``gate/kernel`` and ``up/kernel``
    ``[d_model, d_ff]`` [embed, mlp]; ``down/kernel`` ``[d_ff, d_model]`` [mlp, embed].

    Attributes:
      d_model: width of the input and output.
      d_ff: hidden width.
      activation: applied to the gate.
      dtype: the compute dtype.
      dropout_rate: dropout on the output (and on the hidden with ``hidden_dropout``).
      hidden_dropout: also drop the gated hidden before ``down`` (T5).
      gate_init, up_init, down_init: kernel initialisers; None: Flax's default
        (``lecun_normal``).
      deterministic: no dropout.
    """

    d_model: int
    d_ff: int
    activation: Callable[[jax.Array], jax.Array] = nn.silu
    dtype: jnp.dtype = jnp.float32
    dropout_rate: float = 0.0
    hidden_dropout: bool = False
    gate_init: Initializer | None = None
    up_init: Initializer | None = None
    down_init: Initializer | None = None
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, T, d_model]`` -> ``[B, T, d_model]``."""

        def dense(features, init, name):
            kwargs = {} if init is None else {"kernel_init": init}
            return nn.Dense(features, use_bias=False, dtype=self.dtype, name=name, **kwargs)

        gate = self.activation(dense(self.d_ff, self.gate_init, "gate")(x))
        hidden = gate * dense(self.d_ff, self.up_init, "up")(x)
        if self.hidden_dropout:
            hidden = nn.Dropout(self.dropout_rate)(hidden, deterministic=self.deterministic)
        out = dense(self.d_model, self.down_init, "down")(hidden)
        return nn.Dropout(self.dropout_rate)(out, deterministic=self.deterministic)


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
