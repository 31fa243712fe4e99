"""LLaMA-style decoder-only transformer behind the :class:`Model` interface.

Pre-norm RMSNorm blocks, rotary positions, grouped-query attention, SwiGLU MLP, final norm,
and a head per task: next-token logits (tied or untied with the embedding) or a classifier
on the final hidden state of the last non-padding token.

For sequence-to-sequence batches the decoder-only model runs as a prefix LM on
``[encoder_inputs ; decoder_inputs]`` and returns logits for the decoder part only.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from llama_adv.models.base import (
    BOS_ID,
    Batch,
    Embedded,
    Model,
    Params,
    compute_dtype,
    latent_depths,
    token_mask,
)
from llama_adv.models.layers import (
    Attention,
    GatedMLP,
    RMSNorm,
    attention_bias,
    causal_bias,
    constrain_batch,
    run_stack,
)


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    d_ff: int
    dropout_rate: float
    rope_theta: float
    norm_eps: float
    tie_embeddings: bool
    dtype: str
    head: str  # "lm" | "classification"
    num_classes: int
    remat: bool = False  # recompute each block's activations in the backward pass
    scan_layers: bool = False  # one nn.scan over the blocks (params stacked under "blocks")


class Block(nn.Module):
    cfg: DecoderConfig
    deterministic: bool = True
    decode: bool = False
    scanned: bool = False  # return (x, None) as nn.scan expects

    @nn.compact
    def __call__(self, x, positions, bias, index):
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)
        x = constrain_batch(x)
        h = RMSNorm(cfg.norm_eps, dtype, name="attention_norm")(x)
        attention = Attention(
            num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
            d_model=cfg.d_model, dtype=dtype, dropout_rate=cfg.dropout_rate,
            rope_theta=cfg.rope_theta, scale_queries=True,
            deterministic=self.deterministic, decode=self.decode, name="attention",
        )  # fmt: skip
        x = x + attention(h, bias, positions=positions, index=index)
        h = RMSNorm(cfg.norm_eps, dtype, name="mlp_norm")(x)
        mlp = GatedMLP(
            d_model=cfg.d_model, d_ff=cfg.d_ff, activation=nn.silu, dtype=dtype,
            dropout_rate=cfg.dropout_rate, deterministic=self.deterministic, name="mlp",
        )  # fmt: skip
        x = x + mlp(h)
        return (x, None) if self.scanned else x


class DecoderModule(nn.Module):
    cfg: DecoderConfig

    def setup(self):
        self.embedding = nn.Embed(
            self.cfg.vocab_size,
            self.cfg.d_model,
            embedding_init=nn.initializers.normal(0.02),
            name="embedding",
        )

    def embed(self, tokens: jax.Array) -> jax.Array:
        return self.embedding(tokens)

    def _decode_state(self, mask):
        """Positions and bias of ``t`` new tokens appended to the cache, and the cache index.

        The cache keeps, per row, which slots hold real tokens and how many real tokens
        came so far, so positions and masking equal those of the full forward pass.
        """
        initialized = self.has_variable("cache", "index")
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        key_mask = self.variable("cache", "key_mask", jnp.zeros, mask.shape, bool)
        count = self.variable("cache", "count", jnp.zeros, mask.shape[:1], jnp.int32)
        start = index.value
        positions = jnp.maximum(count.value[:, None] + jnp.cumsum(mask, axis=1) - 1, 0)
        if not initialized:
            return positions, attention_bias(mask, mask, causal=True), start
        t = mask.shape[1]
        key_mask.value = jax.lax.dynamic_update_slice(key_mask.value, mask, (0, start))
        count.value = count.value + jnp.sum(mask, axis=1, dtype=jnp.int32)
        index.value = start + t
        slots = jnp.arange(key_mask.value.shape[1])
        bias = causal_bias(start + jnp.arange(t), slots, key_mask.value)
        return positions, bias, start

    @nn.compact
    def __call__(self, embedded, mask, deterministic=True, decode=False, latents=None):
        """``embedded`` ``[B, T, d_model]``, ``mask`` ``[B, T]`` -> logits (see the head).

        With ``decode``, the ``T`` tokens are appended to the key/value cache (collection
        ``"cache"``) and attend to everything written before them. ``latents``
        ``{N: [B, T, d_model]}`` are added to the residual stream after block ``N``.
        """
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)
        if decode:
            positions, bias, index = self._decode_state(mask)
        else:
            # Right padding: positions count real tokens, so a padded prefix (seq2seq as
            # prefix LM) does not shift the positions of what follows.
            positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
            bias, index = attention_bias(mask, mask, causal=True), jnp.zeros((), jnp.int32)
        x = run_stack(
            Block, cfg.num_layers, embedded.astype(dtype), (positions, bias, index),
            scan=cfg.scan_layers, remat=cfg.remat, latents=latents,
            cfg=cfg, deterministic=deterministic, decode=decode,
        )  # fmt: skip
        x = RMSNorm(cfg.norm_eps, dtype, name="final_norm")(x)
        if cfg.head == "classification":
            last = jnp.maximum(jnp.sum(mask, axis=1) - 1, 0)
            pooled = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
            return nn.Dense(cfg.num_classes, name="classifier")(pooled).astype(jnp.float32)
        if cfg.tie_embeddings:
            return self.embedding.attend(x).astype(jnp.float32)
        head = nn.Dense(cfg.vocab_size, use_bias=False, name="lm_head")
        return head(x).astype(jnp.float32)


class DecoderOnlyModel(Model):
    """Decoder-only model; one perturbable stream, ``"inputs"``.

    Special tokens left out of :meth:`perturbable_mask` by default: BOS (``BOS_ID``,
    wherever it occurs: LM streams, the start of a prefix LM's decoder part) and, for
    classification, the readout token the classifier reads, the last real token (the
    EOS the data pipeline appends).

    Latent streams ``layer:0`` ... ``layer:{num_layers - 1}``: the residual stream after
    each block, at the positions of ``"inputs"`` (a prefix LM's whole sequence).
    """

    streams = ("inputs",)
    latent_source = "inputs"

    def __init__(self, cfg: DecoderConfig):
        self.cfg = cfg
        self.module = DecoderModule(cfg)
        self.latent_depth = cfg.num_layers

    @staticmethod
    def _tokens(batch: Batch) -> jax.Array:
        if "encoder_inputs" in batch:
            return jnp.concatenate([batch["encoder_inputs"], batch["decoder_inputs"]], axis=1)
        return batch["inputs"]

    def init(self, rng: jax.Array, batch: Batch) -> Params:
        tokens = self._tokens(batch)
        dummy = jnp.zeros((*tokens.shape, self.cfg.d_model), jnp.float32)

        def both(module, tokens, dummy):
            module.embed(tokens)
            return module(dummy, token_mask(tokens))

        return self.module.init(rng, tokens, dummy, method=both)["params"]

    def embed(self, params: Params, batch: Batch) -> Embedded:
        tokens = self._tokens(batch)
        return {"inputs": self.module.apply({"params": params}, tokens, method="embed")}

    def apply_embedded(self, params, embedded, batch, *, deterministic=True, rngs=None):
        tokens = self._tokens(batch)
        logits = self.module.apply(
            {"params": params},
            embedded["inputs"],
            token_mask(tokens),
            deterministic,
            False,
            latent_depths(embedded),
            rngs=rngs,
        )
        if "decoder_inputs" in batch and self.cfg.head == "lm":
            logits = logits[:, -batch["decoder_inputs"].shape[1] :]
        return {"logits": logits}

    def stream_tokens(self, batch: Batch) -> dict[str, jax.Array]:
        return {"inputs": self._tokens(batch)}

    def perturbable_mask(self, batch: Batch, *, perturb_special: bool = False):
        tokens = self._tokens(batch)
        real = token_mask(tokens)
        if perturb_special:
            return {"inputs": real}
        mask = real & (tokens != BOS_ID)
        if self.cfg.head == "classification":  # the readout: the last real token
            last = jnp.maximum(jnp.sum(real, axis=1) - 1, 0)
            mask &= jnp.arange(tokens.shape[1])[None, :] != last[:, None]
        return {"inputs": mask}

    def embedding_table(self, params: Params) -> jax.Array:
        return params["embedding"]["embedding"]

    def init_cache(self, params: Params, batch_size: int, max_length: int) -> Params:
        """A zero key/value cache for ``batch_size`` sequences of up to ``max_length`` tokens."""
        tokens = jnp.zeros((batch_size, max_length), jnp.int32)
        dummy = jnp.zeros((batch_size, max_length, self.cfg.d_model), jnp.float32)
        shapes = jax.eval_shape(
            lambda: self.module.apply(
                {"params": params}, dummy, token_mask(tokens), True, True, mutable=["cache"]
            )[1]["cache"]
        )
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def decode_step(
        self, params: Params, cache: Params, tokens: jax.Array
    ) -> tuple[jax.Array, Params]:
        """Appends ``tokens`` ``[B, t]`` to ``cache``; returns logits ``[B, t, vocab]``."""
        embedded = self.module.apply({"params": params}, tokens, method="embed")
        logits, updated = self.module.apply(
            {"params": params, "cache": cache},
            embedded,
            token_mask(tokens),
            True,
            True,
            mutable=["cache"],
        )
        return logits, updated["cache"]
