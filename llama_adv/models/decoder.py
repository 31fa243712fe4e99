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

from llama_adv.models.base import Batch, Embedded, Model, Params, compute_dtype, token_mask
from llama_adv.models.layers import RMSNorm, attention_bias, rotary_embedding


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


class Attention(nn.Module):
    cfg: DecoderConfig

    @nn.compact
    def __call__(self, x, positions, bias, deterministic):
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)
        dense = lambda n, name: nn.DenseGeneral(  # noqa: E731
            (n, cfg.head_dim), use_bias=False, dtype=dtype, name=name
        )
        q = rotary_embedding(dense(cfg.num_heads, "query")(x), positions, cfg.rope_theta)
        k = rotary_embedding(dense(cfg.num_kv_heads, "key")(x), positions, cfg.rope_theta)
        v = dense(cfg.num_kv_heads, "value")(x)
        groups = cfg.num_heads // cfg.num_kv_heads
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        scores = scores / jnp.sqrt(cfg.head_dim).astype(jnp.float32) + bias
        weights = jax.nn.softmax(scores, axis=-1).astype(dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        out = nn.DenseGeneral(cfg.d_model, axis=(-2, -1), use_bias=False, dtype=dtype, name="out")(
            out
        )
        return nn.Dropout(cfg.dropout_rate)(out, deterministic=deterministic)


class SwiGLU(nn.Module):
    cfg: DecoderConfig

    @nn.compact
    def __call__(self, x, deterministic):
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)
        gate = nn.Dense(cfg.d_ff, use_bias=False, dtype=dtype, name="gate")(x)
        up = nn.Dense(cfg.d_ff, use_bias=False, dtype=dtype, name="up")(x)
        out = nn.Dense(cfg.d_model, use_bias=False, dtype=dtype, name="down")(nn.silu(gate) * up)
        return nn.Dropout(cfg.dropout_rate)(out, deterministic=deterministic)


class Block(nn.Module):
    cfg: DecoderConfig

    @nn.compact
    def __call__(self, x, positions, bias, deterministic):
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)
        h = RMSNorm(cfg.norm_eps, dtype, name="attention_norm")(x)
        x = x + Attention(cfg, name="attention")(h, positions, bias, deterministic)
        h = RMSNorm(cfg.norm_eps, dtype, name="mlp_norm")(x)
        return x + SwiGLU(cfg, name="mlp")(h, deterministic)


class DecoderModule(nn.Module):
    cfg: DecoderConfig

    def setup(self):
        cfg = self.cfg
        self.embedding = nn.Embed(
            cfg.vocab_size,
            cfg.d_model,
            embedding_init=nn.initializers.normal(0.02),
            name="embedding",
        )
        self.blocks = [Block(cfg, name=f"block_{i}") for i in range(cfg.num_layers)]
        self.final_norm = RMSNorm(cfg.norm_eps, compute_dtype(cfg.dtype))
        if cfg.head == "classification":
            self.classifier = nn.Dense(cfg.num_classes, name="classifier")
        elif not cfg.tie_embeddings:
            self.lm_head = nn.Dense(cfg.vocab_size, use_bias=False, name="lm_head")

    def embed(self, tokens: jax.Array) -> jax.Array:
        return self.embedding(tokens)

    def __call__(self, embedded, mask, deterministic=True):
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)
        # Right padding: positions count real tokens, so a padded prefix (seq2seq as
        # prefix LM) does not shift the positions of what follows.
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        bias = attention_bias(mask, mask, causal=True)
        x = embedded.astype(dtype)
        for block in self.blocks:
            x = block(x, positions, bias, deterministic)
        x = self.final_norm(x)
        if cfg.head == "classification":
            last = jnp.maximum(jnp.sum(mask, axis=1) - 1, 0)
            pooled = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
            return self.classifier(pooled).astype(jnp.float32)
        if cfg.tie_embeddings:
            return self.embedding.attend(x).astype(jnp.float32)
        return self.lm_head(x).astype(jnp.float32)


class DecoderOnlyModel(Model):
    """Decoder-only model; one perturbable stream, ``"inputs"``."""

    streams = ("inputs",)

    def __init__(self, cfg: DecoderConfig):
        self.cfg = cfg
        self.module = DecoderModule(cfg)

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
            rngs=rngs,
        )
        if "decoder_inputs" in batch and self.cfg.head == "lm":
            logits = logits[:, -batch["decoder_inputs"].shape[1] :]
        return {"logits": logits}

    def perturbable_mask(self, batch: Batch) -> dict[str, jax.Array]:
        return {"inputs": token_mask(self._tokens(batch))}
