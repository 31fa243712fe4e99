"""Models layer: Flax architectures behind one embedding-perturbation interface."""

from __future__ import annotations

import ml_collections as mlc

from llama_adv.errors import UserError
from llama_adv.models.base import PAD_ID, Model, count_params
from llama_adv.models.decoder import DecoderConfig, DecoderOnlyModel
from llama_adv.models.encoder_decoder import EncoderDecoderConfig, EncoderDecoderModel
from llama_adv.models.presets import PRESETS, apply_preset, flops_per_token
from llama_adv.registry import Registry

MODELS: Registry = Registry("model")


def _check_common(config: mlc.ConfigDict) -> None:
    if config.dtype not in ("float32", "bfloat16"):
        raise UserError(f"model.dtype must be float32 or bfloat16, got {config.dtype!r}.")
    if not config.head_dim and config.d_model % config.num_heads:
        raise UserError(
            f"model.d_model ({config.d_model}) must be divisible by model.num_heads "
            f"({config.num_heads}), or set model.head_dim."
        )


@MODELS.register("decoder")
def build_decoder(config: mlc.ConfigDict, *, head: str, vocab_size: int, num_classes: int):
    _check_common(config)
    num_kv_heads = config.num_kv_heads or config.num_heads
    if config.num_heads % num_kv_heads:
        raise UserError(
            f"model.num_heads ({config.num_heads}) must be divisible by model.num_kv_heads "
            f"({num_kv_heads})."
        )
    if config.classifier_pooling not in ("auto", "last"):
        raise UserError(
            f"model.classifier_pooling={config.classifier_pooling!r} is not available for "
            "model.name=decoder; valid: auto, last."
        )
    return DecoderOnlyModel(
        DecoderConfig(
            vocab_size=config.vocab_size or vocab_size,
            d_model=config.d_model,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=config.head_dim or config.d_model // config.num_heads,
            d_ff=config.d_ff,
            dropout_rate=config.dropout_rate,
            rope_theta=config.rope_theta,
            norm_eps=config.norm_eps,
            tie_embeddings=config.tie_embeddings,
            dtype=config.dtype,
            head=head,
            num_classes=num_classes,
            remat=config.remat,
            scan_layers=config.scan_layers,
        )
    )


@MODELS.register("encoder_decoder")
def build_encoder_decoder(config: mlc.ConfigDict, *, head: str, vocab_size: int, num_classes: int):
    _check_common(config)
    pooling = "mean" if config.classifier_pooling == "auto" else config.classifier_pooling
    if pooling not in ("mean", "label_words"):
        raise UserError(
            f"model.classifier_pooling={config.classifier_pooling!r} is not available for "
            "model.name=encoder_decoder; valid: auto (= mean), mean, label_words."
        )
    label_ids = tuple(int(i) for i in config.label_token_ids)
    if head == "classification" and pooling == "label_words" and len(label_ids) != num_classes:
        raise UserError(
            f"model.label_token_ids has {len(label_ids)} ids but the task has {num_classes} "
            "classes; give one token id per class."
        )
    return EncoderDecoderModel(
        EncoderDecoderConfig(
            vocab_size=config.vocab_size or vocab_size,
            d_model=config.d_model,
            num_layers=config.num_layers,
            num_decoder_layers=config.num_decoder_layers or config.num_layers,
            num_heads=config.num_heads,
            head_dim=config.head_dim or config.d_model // config.num_heads,
            d_ff=config.d_ff,
            dropout_rate=config.dropout_rate,
            norm_eps=config.norm_eps,
            tie_embeddings=config.tie_embeddings,
            dtype=config.dtype,
            head=head,
            num_classes=num_classes,
            num_buckets=config.relative_buckets,
            max_distance=config.relative_max_distance,
            pooling=pooling,
            label_token_ids=label_ids,
            remat=config.remat,
            scan_layers=config.scan_layers,
        )
    )


def build_model(config: mlc.ConfigDict, *, head: str, vocab_size: int, num_classes: int) -> Model:
    """Builds the model named by ``config.name`` with the head a task needs.

    Args:
      config: the ``model`` config section; ``config.preset`` (if set) is applied first.
      head: ``"lm"`` or ``"classification"``.
      vocab_size: the tokenizer's vocabulary size (used when ``config.vocab_size`` is 0).
      num_classes: classifier outputs (classification head only).
    """
    factory = MODELS.get(config.name, field="model.name")
    config = apply_preset(config)
    return factory(config, head=head, vocab_size=vocab_size, num_classes=num_classes)


__all__ = [
    "MODELS",
    "PAD_ID",
    "PRESETS",
    "EncoderDecoderModel",
    "Model",
    "apply_preset",
    "build_model",
    "count_params",
    "flops_per_token",
]
