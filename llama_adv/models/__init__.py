"""Models layer: Flax architectures behind one embedding-perturbation interface."""

from __future__ import annotations

import ml_collections as mlc

from llama_adv.errors import UserError
from llama_adv.models.base import PAD_ID, Model, count_params
from llama_adv.models.decoder import DecoderConfig, DecoderOnlyModel
from llama_adv.registry import Registry

MODELS: Registry = Registry("model")


@MODELS.register("decoder")
def build_decoder(config: mlc.ConfigDict, *, head: str, vocab_size: int, num_classes: int):
    num_kv_heads = config.num_kv_heads or config.num_heads
    if config.d_model % config.num_heads or config.num_heads % num_kv_heads:
        raise UserError(
            f"model.d_model ({config.d_model}) must be divisible by model.num_heads "
            f"({config.num_heads}), and num_heads by model.num_kv_heads ({num_kv_heads})."
        )
    if config.dtype not in ("float32", "bfloat16"):
        raise UserError(f"model.dtype must be float32 or bfloat16, got {config.dtype!r}.")
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
        )
    )


def build_model(config: mlc.ConfigDict, *, head: str, vocab_size: int, num_classes: int) -> Model:
    """Builds the model named by ``config.name`` with the head a task needs.

    Args:
      config: the ``model`` config section.
      head: ``"lm"`` or ``"classification"``.
      vocab_size: the tokenizer's vocabulary size (used when ``config.vocab_size`` is 0).
      num_classes: classifier outputs (classification head only).
    """
    factory = MODELS.get(config.name, field="model.name")
    return factory(config, head=head, vocab_size=vocab_size, num_classes=num_classes)


__all__ = ["MODELS", "PAD_ID", "Model", "build_model", "count_params"]
