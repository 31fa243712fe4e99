"""T5 v1.1-style encoder-decoder behind the :class:`Model` interface.

Shared token embedding; pre-norm blocks with RMS layer norm and no biases anywhere;
bucketed relative position bias (one table per stack, shared by its layers, added to
unscaled dot-product scores); gated-GELU feed-forward; encoder self-attention, decoder
causal self-attention and cross-attention. The LM head is the shared embedding applied to
the decoder output scaled by ``d_model**-0.5`` (tied, as original T5) or a separate
unscaled projection (untied, as T5 v1.1).

Streams: ``"encoder"`` ``[B, S, d_model]`` and ``"decoder"`` ``[B, T, d_model]``; the
latent streams ``layer:N`` are the encoder's residual stream after its block ``N``.

* Sequence-to-sequence / LM head: batches carry ``encoder_inputs``, ``decoder_inputs``
  (targets shifted right) and the logits are ``[B, T, vocab]``.
* Classification (batches carry only ``inputs``, which feed the encoder):
  ``model.classifier_pooling="mean"`` (default for this model) averages the encoder output
  over non-padding tokens and applies a linear classifier; the decoder is not built and the
  only stream is ``"encoder"`` (asking to perturb ``"decoder"`` is then a config error,
  rather than a silent no-op). ``"label_words"`` is T5's text-to-text way: the decoder
  reads one start token (id 0, T5's decoder start) and the class logits are its LM logits
  at ``model.label_token_ids``; the ``"decoder"`` stream is then that start token's
  embedding ``[B, 1, d_model]``.

The first decoder position is always treated as real, even when its id is 0: T5 uses the
padding id as decoder start token.

Special tokens left out of :meth:`~EncoderDecoderModel.perturbable_mask` by default: the
decoder start token (position 0 of the ``"decoder"`` stream, BOS or T5's 0; with
``label_words`` it is also the readout token, so that stream has nothing perturbable). The
encoder stream has no BOS in this project's data and mean pooling no readout token, so only
its padding is left out (ids are not compared: a T5 vocabulary's id 1 is EOS, not BOS).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from llama_adv.errors import UserError
from llama_adv.models.base import (
    PAD_ID,
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
    relative_position_bucket,
    run_stack,
)


@dataclasses.dataclass(frozen=True)
class EncoderDecoderConfig:
    vocab_size: int
    d_model: int
    num_layers: int  # encoder blocks
    num_decoder_layers: int
    num_heads: int
    head_dim: int
    d_ff: int
    dropout_rate: float
    norm_eps: float
    tie_embeddings: bool
    dtype: str
    head: str  # "lm" | "classification"
    num_classes: int
    num_buckets: int = 32
    max_distance: int = 128
    pooling: str = "mean"  # classification: "mean" | "label_words"
    label_token_ids: tuple[int, ...] = ()
    remat: bool = False
    scan_layers: bool = False

    @property
    def has_decoder(self) -> bool:
        return self.head == "lm" or self.pooling == "label_words"


def _normal(std: float):
    return nn.initializers.normal(std)


_gelu_tanh = functools.partial(jax.nn.gelu, approximate=True)


class RelativeBias(nn.Module):
    """The per-head bias T5 adds to attention scores, looked up by distance bucket."""

    cfg: EncoderDecoderConfig
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
        """``[Tq]``, ``[Tk]`` integer positions -> ``[1, H, Tq, Tk]`` float32."""
        cfg = self.cfg
        table = self.param(
            "embedding", _normal(cfg.d_model**-0.5), (cfg.num_buckets, cfg.num_heads), jnp.float32
        )
        buckets = relative_position_bucket(
            key_positions[None, :] - query_positions[:, None],
            bidirectional=self.bidirectional,
            num_buckets=cfg.num_buckets,
            max_distance=cfg.max_distance,
        )
        return jnp.transpose(table[buckets], (2, 0, 1))[None]


def _attention(cfg: EncoderDecoderConfig, deterministic: bool, decode: bool, name: str):
    """T5's attention: no rotary, unscaled scores (the scale is folded into the query's
    initialisation), dropout on the weights, T5's initialisers."""
    inner = cfg.num_heads * cfg.head_dim
    return Attention(
        num_heads=cfg.num_heads, head_dim=cfg.head_dim, d_model=cfg.d_model,
        dtype=compute_dtype(cfg.dtype), dropout_rate=cfg.dropout_rate, weights_dropout=True,
        rope_theta=None, scale_queries=False,
        query_init=_normal((cfg.d_model * cfg.head_dim) ** -0.5),
        key_init=_normal(cfg.d_model**-0.5), value_init=_normal(cfg.d_model**-0.5),
        out_init=_normal(inner**-0.5),
        deterministic=deterministic, decode=decode, name=name,
    )  # fmt: skip


def _mlp(cfg: EncoderDecoderConfig, deterministic: bool):
    """T5 v1.1's gated GELU (tanh-approximated, HF's "gelu_new"), dropout on the hidden."""
    return GatedMLP(
        d_model=cfg.d_model, d_ff=cfg.d_ff, activation=_gelu_tanh,
        dtype=compute_dtype(cfg.dtype), dropout_rate=cfg.dropout_rate, hidden_dropout=True,
        gate_init=_normal(cfg.d_model**-0.5), up_init=_normal(cfg.d_model**-0.5),
        down_init=_normal(cfg.d_ff**-0.5), deterministic=deterministic, name="mlp",
    )  # fmt: skip


class EncoderBlock(nn.Module):
    cfg: EncoderDecoderConfig
    deterministic: bool = True
    scanned: bool = False

    @nn.compact
    def __call__(self, x, bias):
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)
        x = constrain_batch(x)
        h = RMSNorm(cfg.norm_eps, dtype, name="attention_norm")(x)
        x = x + _attention(cfg, self.deterministic, False, "attention")(h, bias)
        h = RMSNorm(cfg.norm_eps, dtype, name="mlp_norm")(x)
        x = x + _mlp(cfg, self.deterministic)(h)
        return (x, None) if self.scanned else x


class DecoderBlock(nn.Module):
    cfg: EncoderDecoderConfig
    deterministic: bool = True
    decode: bool = False
    scanned: bool = False

    @nn.compact
    def __call__(self, x, self_bias, encoded, cross_bias, index):
        cfg = self.cfg
        dtype = compute_dtype(cfg.dtype)
        x = constrain_batch(x)
        h = RMSNorm(cfg.norm_eps, dtype, name="attention_norm")(x)
        attention = _attention(cfg, self.deterministic, self.decode, "attention")
        x = x + attention(h, self_bias, index=index)
        h = RMSNorm(cfg.norm_eps, dtype, name="cross_attention_norm")(x)
        cross = _attention(cfg, self.deterministic, False, "cross_attention")
        x = x + cross(h, cross_bias, context=encoded)
        h = RMSNorm(cfg.norm_eps, dtype, name="mlp_norm")(x)
        x = x + _mlp(cfg, self.deterministic)(h)
        return (x, None) if self.scanned else x


class EncoderStack(nn.Module):
    cfg: EncoderDecoderConfig

    @nn.compact
    def __call__(self, embedded, mask, deterministic=True, latents=None):
        """``[B, S, d_model]`` embeddings, ``[B, S]`` mask -> ``[B, S, d_model]``;
        ``latents`` ``{N: [B, S, d_model]}`` are added after encoder block ``N``."""
        cfg = self.cfg
        positions = jnp.arange(mask.shape[1])
        bias = RelativeBias(cfg, bidirectional=True, name="relative_bias")(positions, positions)
        bias = bias + attention_bias(mask, mask, causal=False)
        x = nn.Dropout(cfg.dropout_rate)(embedded, deterministic=deterministic)
        x = run_stack(
            EncoderBlock, cfg.num_layers, x.astype(compute_dtype(cfg.dtype)), (bias,),
            scan=cfg.scan_layers, remat=cfg.remat, latents=latents,
            cfg=cfg, deterministic=deterministic,
        )  # fmt: skip
        x = RMSNorm(cfg.norm_eps, compute_dtype(cfg.dtype), name="final_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class DecoderStack(nn.Module):
    cfg: EncoderDecoderConfig

    @nn.compact
    def __call__(self, embedded, mask, encoded, encoder_mask, deterministic=True, decode=False):
        """``[B, T, d_model]`` decoder embeddings attending to ``encoded`` ``[B, S, d_model]``.

        With ``decode`` the ``T`` tokens are appended to the self-attention cache.
        """
        cfg = self.cfg
        relative = RelativeBias(cfg, bidirectional=False, name="relative_bias")
        t = mask.shape[1]
        initialized = decode and self.has_variable("cache", "index")
        if decode:
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            key_mask = self.variable("cache", "key_mask", jnp.zeros, mask.shape, bool)
        if initialized:
            start = index.value
            key_mask.value = jax.lax.dynamic_update_slice(key_mask.value, mask, (0, start))
            index.value = start + t
            queries, keys = start + jnp.arange(t), jnp.arange(key_mask.value.shape[1])
            self_bias = causal_bias(queries, keys, key_mask.value) + relative(queries, keys)
        else:
            start, positions = jnp.zeros((), jnp.int32), jnp.arange(t)
            self_bias = attention_bias(mask, mask, causal=True) + relative(positions, positions)
        cross_bias = attention_bias(mask, encoder_mask, causal=False)
        x = nn.Dropout(cfg.dropout_rate)(embedded, deterministic=deterministic)
        x = run_stack(
            DecoderBlock, cfg.num_decoder_layers, x.astype(compute_dtype(cfg.dtype)),
            (self_bias, encoded, cross_bias, start),
            scan=cfg.scan_layers, remat=cfg.remat,
            cfg=cfg, deterministic=deterministic, decode=decode,
        )  # fmt: skip
        x = RMSNorm(cfg.norm_eps, compute_dtype(cfg.dtype), name="final_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class EncoderDecoderModule(nn.Module):
    cfg: EncoderDecoderConfig

    def setup(self):
        cfg = self.cfg
        self.shared = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=_normal(1.0))
        self.encoder = EncoderStack(cfg)
        if cfg.has_decoder:
            self.decoder = DecoderStack(cfg)
            if not cfg.tie_embeddings:
                self.lm_head = nn.Dense(
                    cfg.vocab_size, use_bias=False, kernel_init=_normal(cfg.d_model**-0.5)
                )
        if cfg.head == "classification" and cfg.pooling == "mean":
            self.classifier = nn.Dense(cfg.num_classes)

    def embed(self, tokens: jax.Array) -> jax.Array:
        return self.shared(tokens)

    def encode(self, embedded, mask, deterministic=True, latents=None):
        return self.encoder(embedded, mask, deterministic, latents)

    def decode(self, embedded, mask, encoded, encoder_mask, deterministic=True, decode=False):
        """Decoder stack and LM head: ``[B, T, d_model]`` -> logits ``[B, T, vocab]``."""
        x = self.decoder(embedded, mask, encoded, encoder_mask, deterministic, decode)
        if self.cfg.tie_embeddings:
            # T5 rescales before the tied head because the shared table has unit scale.
            x = x * (self.cfg.d_model**-0.5)
            return self.shared.attend(x).astype(jnp.float32)
        return self.lm_head(x).astype(jnp.float32)

    def classify(self, encoded, mask):
        """Mean of ``encoded`` ``[B, S, d]`` over real tokens -> ``[B, num_classes]``."""
        weights = mask.astype(jnp.float32)[..., None]
        pooled = jnp.sum(encoded.astype(jnp.float32) * weights, axis=1)
        pooled = pooled / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
        return self.classifier(pooled).astype(jnp.float32)

    def __call__(self, encoder_tokens, decoder_tokens):
        """Initialisation only: touches every parameter."""
        encoded = self.encode(self.embed(encoder_tokens), token_mask(encoder_tokens))
        if self.cfg.head == "classification" and self.cfg.pooling == "mean":
            self.classify(encoded, token_mask(encoder_tokens))
        if self.cfg.has_decoder:
            dec_mask = decoder_mask(decoder_tokens)
            self.decode(self.embed(decoder_tokens), dec_mask, encoded, token_mask(encoder_tokens))


def decoder_mask(tokens: jax.Array) -> jax.Array:
    """``[B, T]`` real decoder positions: non-padding, and always the first (start) token."""
    return token_mask(tokens) | (jnp.arange(tokens.shape[1]) == 0)[None, :]


class EncoderDecoderModel(Model):
    """T5-style model; streams ``("encoder", "decoder")`` (or ``("encoder",)``, see above).

    Latent streams ``layer:0`` ... ``layer:{num_layers - 1}`` are the encoder's: the
    residual stream after each encoder block, at the positions of ``"encoder"``.
    """

    latent_source = "encoder"

    def __init__(self, cfg: EncoderDecoderConfig):
        self.cfg = cfg
        self.module = EncoderDecoderModule(cfg)
        self.latent_depth = cfg.num_layers
        self.streams = ("encoder", "decoder") if cfg.has_decoder else ("encoder",)

    def _tokens(self, batch: Batch) -> tuple[jax.Array, jax.Array | None]:
        """Encoder tokens ``[B, S]`` and decoder tokens ``[B, T]`` (None without decoder)."""
        if "encoder_inputs" in batch:
            return batch["encoder_inputs"], batch["decoder_inputs"]
        if self.cfg.head == "lm":
            raise UserError(
                "model.name=encoder_decoder with a language-modelling task needs "
                "encoder_inputs/decoder_inputs batches; use task.name=seq2seq with a "
                "sequence-to-sequence dataset, or model.name=decoder."
            )
        inputs = batch["inputs"]
        if not self.cfg.has_decoder:
            return inputs, None
        return inputs, jnp.full((inputs.shape[0], 1), PAD_ID, inputs.dtype)

    def init(self, rng: jax.Array, batch: Batch) -> Params:
        encoder_tokens, decoder_tokens = self._tokens(batch)
        if decoder_tokens is None:
            decoder_tokens = encoder_tokens[:, :1]
        return self.module.init(rng, encoder_tokens, decoder_tokens)["params"]

    def embed(self, params: Params, batch: Batch) -> Embedded:
        encoder_tokens, decoder_tokens = self._tokens(batch)
        embed = lambda t: self.module.apply({"params": params}, t, method="embed")  # noqa: E731
        out = {"encoder": embed(encoder_tokens)}
        if decoder_tokens is not None:
            out["decoder"] = embed(decoder_tokens)
        return out

    def apply_embedded(self, params, embedded, batch, *, deterministic=True, rngs=None):
        encoder_tokens, decoder_tokens = self._tokens(batch)
        variables = {"params": params}
        encoder_mask = token_mask(encoder_tokens)
        encoded = self.module.apply(
            variables, embedded["encoder"], encoder_mask, deterministic,
            latent_depths(embedded), rngs=rngs, method="encode",
        )  # fmt: skip
        if decoder_tokens is None:
            logits = self.module.apply(variables, encoded, encoder_mask, method="classify")
            return {"logits": logits}
        logits = self.module.apply(
            variables, embedded["decoder"], decoder_mask(decoder_tokens), encoded, encoder_mask,
            deterministic, rngs=rngs, method="decode",
        )  # fmt: skip
        if self.cfg.head == "classification":  # label words read at the start token
            logits = logits[:, 0, jnp.asarray(self.cfg.label_token_ids)]
        return {"logits": logits}

    def stream_tokens(self, batch: Batch) -> dict[str, jax.Array]:
        encoder_tokens, decoder_tokens = self._tokens(batch)
        out = {"encoder": encoder_tokens}
        if decoder_tokens is not None:
            out["decoder"] = decoder_tokens
        return out

    def perturbable_mask(self, batch: Batch, *, perturb_special: bool = False):
        encoder_tokens, decoder_tokens = self._tokens(batch)
        masks = {"encoder": token_mask(encoder_tokens)}
        if decoder_tokens is not None:
            mask = decoder_mask(decoder_tokens)
            if not perturb_special:  # the decoder start token (and label_words' readout)
                mask &= (jnp.arange(decoder_tokens.shape[1]) != 0)[None, :]
            masks["decoder"] = mask
        return masks

    def embedding_table(self, params: Params) -> jax.Array:
        return params["shared"]["embedding"]

    # -- cached decoding (llama_adv.models.decoding) --------------------------------------

    def encode(self, params: Params, encoder_tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``[B, S]`` tokens -> encoder output ``[B, S, d_model]`` and its mask ``[B, S]``."""
        embedded = self.module.apply({"params": params}, encoder_tokens, method="embed")
        return self.encode_embedded(params, embedded, encoder_tokens)

    def encode_embedded(
        self, params: Params, embedded: jax.Array, encoder_tokens: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Encoder output ``[B, S, d_model]`` and mask ``[B, S]`` of the ``"encoder"`` stream
        ``embedded`` ``[B, S, d_model]`` (e.g. perturbed) of ``encoder_tokens`` ``[B, S]``;
        dropout off, as in decoding."""
        mask = token_mask(encoder_tokens)
        return self.module.apply({"params": params}, embedded, mask, method="encode"), mask

    def init_cache(
        self, params: Params, batch_size: int, max_length: int, encoded: jax.Array
    ) -> Params:
        """A zero self-attention cache for ``batch_size`` targets of ``max_length`` tokens."""
        tokens = jnp.zeros((batch_size, max_length), jnp.int32)
        embedded = jnp.zeros((batch_size, max_length, self.cfg.d_model), jnp.float32)
        enc_mask = jnp.ones(encoded.shape[:2], bool)

        def shapes():
            _, state = self.module.apply(
                {"params": params}, embedded, decoder_mask(tokens), encoded, enc_mask,
                True, True, method="decode", mutable=["cache"],
            )  # fmt: skip
            return state["cache"]

        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(shapes))

    def decode_step(
        self,
        params: Params,
        cache: Params,
        tokens: jax.Array,
        encoded: jax.Array,
        encoder_mask: jax.Array,
    ) -> tuple[jax.Array, Params]:
        """Appends decoder ``tokens`` ``[B, t]``; returns logits ``[B, t, vocab]`` and cache.

        Every decoded token counts as real (the caller stops rows at end of sequence).
        """
        variables = {"params": params, "cache": cache}
        embedded = self.module.apply(variables, tokens, method="embed")
        mask = jnp.ones(tokens.shape, bool)
        logits, state = self.module.apply(
            variables, embedded, mask, encoded, encoder_mask, True, True,
            method="decode", mutable=["cache"],
        )  # fmt: skip
        return logits, state["cache"]
