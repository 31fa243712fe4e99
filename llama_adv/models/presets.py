"""Named model sizes (``model.preset``) and the FLOPs-per-token estimate used for MFU.

Parameter counts with a 32,000-token vocabulary, tied embeddings and the LM head
(``count_params`` of ``init``; checked in ``tests/models/test_presets.py``):

========  ==============  ===============================
preset    decoder         encoder_decoder (num_layers each)
========  ==============  ===============================
tiny      2,154,816       2,245,632
small     13,012,224      15,275,776
base      123,685,632     123,691,776
medium    341,099,520     347,395,072
large     990,455,808     971,593,728
========  ==============  ===============================
"""

from __future__ import annotations

from typing import Any

import ml_collections as mlc

from llama_adv.errors import UserError

# Fields a preset sets; everything else in the model section keeps its value.
_DECODER = {
    "tiny": dict(d_model=64, num_layers=2, num_heads=4, num_kv_heads=0, head_dim=0, d_ff=192),
    "small": dict(d_model=256, num_layers=6, num_heads=4, num_kv_heads=0, head_dim=0, d_ff=704),
    "base": dict(d_model=768, num_layers=12, num_heads=12, num_kv_heads=0, head_dim=0, d_ff=2560),
    "medium": dict(
        d_model=1024, num_layers=24, num_heads=16, num_kv_heads=0, head_dim=0, d_ff=2816
    ),
    "large": dict(d_model=2048, num_layers=18, num_heads=16, num_kv_heads=0, head_dim=0, d_ff=5632),
    # Shapes of released checkpoints (their config.json), so import-hf lands on a name.
    # Llama-3.2-1B (meta-llama/Llama-3.2-1B): tied embeddings. Its "llama3" RoPE frequency
    # scaling (for contexts beyond 8k) is not implemented: positions past 8,192 differ.
    "llama3_1b": dict(d_model=2048, num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
                      d_ff=8192, vocab_size=128256, rope_theta=500000.0, norm_eps=1e-5,
                      tie_embeddings=True),
    # Meta-Llama-3-8B: untied LM head.
    "llama3_8b": dict(d_model=4096, num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128,
                      d_ff=14336, vocab_size=128256, rope_theta=500000.0, norm_eps=1e-5,
                      tie_embeddings=False),
}  # fmt: skip
# T5 v1.1-like proportions: num_layers blocks in each of the encoder and the decoder.
_ENCODER_DECODER = {
    "tiny": dict(
        d_model=64, num_layers=2, num_decoder_layers=0, num_heads=4, head_dim=16, d_ff=128
    ),
    "small": dict(
        d_model=256, num_layers=4, num_decoder_layers=0, num_heads=4, head_dim=64, d_ff=640
    ),
    "base": dict(
        d_model=768, num_layers=6, num_decoder_layers=0, num_heads=12, head_dim=64, d_ff=2048
    ),
    "medium": dict(
        d_model=1024, num_layers=10, num_decoder_layers=0, num_heads=16, head_dim=64, d_ff=3072
    ),
    "large": dict(
        d_model=2048, num_layers=8, num_decoder_layers=0, num_heads=32, head_dim=64, d_ff=5120
    ),
    # google/t5-v1_1-base: 12 blocks per stack, gated GELU, untied head, 32,128 tokens.
    "t5_base": dict(d_model=768, num_layers=12, num_decoder_layers=0, num_heads=12, head_dim=64,
                    d_ff=2048, vocab_size=32128, tie_embeddings=False, norm_eps=1e-6,
                    relative_buckets=32, relative_max_distance=128),
}  # fmt: skip
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "decoder": _DECODER,
    "encoder_decoder": _ENCODER_DECODER,
}


def matching_preset(name: str, fields: dict[str, Any]) -> str:
    """The preset of ``name`` (decoder | encoder_decoder) whose every field equals
    ``fields``' (an imported checkpoint's model section); ``""`` if none does."""

    def same(key: str, value: Any) -> bool:
        mine = fields.get(key)
        if key == "num_kv_heads" and value == 0:  # 0 = num_heads
            return mine in (0, fields.get("num_heads"))
        if key == "head_dim" and value == 0:  # 0 = d_model // num_heads
            return mine in (0, fields.get("d_model", 0) // max(fields.get("num_heads", 1), 1))
        if key == "num_decoder_layers" and value == 0:  # 0 = num_layers
            return mine in (0, fields.get("num_layers"))
        if isinstance(value, float):
            return mine is not None and abs(float(mine) - value) <= 1e-9 * max(abs(value), 1)
        return mine == value

    for preset, values in PRESETS.get(name, {}).items():
        if all(same(k, v) for k, v in values.items()):
            return preset
    return ""


def apply_preset(config: mlc.ConfigDict) -> mlc.ConfigDict:
    """Returns a copy of the ``model`` section with ``config.preset``'s fields set.

    An empty preset returns the section unchanged. The preset wins over the size fields it
    names, so ``--config.model.preset=base`` alone is enough.
    """
    if not config.preset:
        return config
    table = PRESETS.get(config.name, {})
    if config.preset not in table:
        raise UserError(
            f"Unknown model.preset {config.preset!r} for model.name={config.name!r}; "
            f"valid: {', '.join(sorted(table)) or 'none'}."
        )
    out = mlc.ConfigDict(config.to_dict())
    for key, value in table[config.preset].items():
        out[key] = value
    return out


def _attention_width(config: mlc.ConfigDict) -> int:
    return config.num_heads * (config.head_dim or config.d_model // config.num_heads)


def _check_head(head: str, num_classes: int) -> None:
    if head not in ("lm", "classification"):
        raise ValueError(f"head must be 'lm' or 'classification', got {head!r}")
    if head == "classification" and num_classes < 1:
        raise ValueError("a classification head needs num_classes >= 1")


def _label_words(config: mlc.ConfigDict, head: str) -> bool:
    """The encoder-decoder classifier that reads LM logits of one decoder token."""
    return (
        head == "classification"
        and config.name == "encoder_decoder"
        and config.classifier_pooling == "label_words"
    )


def matmul_params(
    config: mlc.ConfigDict, vocab_size: int, *, head: str = "lm", num_classes: int = 0
) -> dict[str, int]:
    """Parameters that multiply activations, per part (embedding lookups excluded).

    Returns ``{"encoder": ..., "decoder": ..., "head": ...}`` (``encoder`` is 0 for the
    decoder-only model). ``head`` is what the task's head (``"lm"`` or
    ``"classification"``, as :func:`llama_adv.models.build_model`) multiplies: the
    ``d_model x vocab`` LM projection, tied or not, or the ``d_model x num_classes``
    classifier; an encoder-decoder classifier with ``label_words`` pooling reads the LM
    logits, so its head is the LM projection. The mean-pooled encoder-decoder classifier
    builds no decoder (``decoder`` 0).
    """
    _check_head(head, num_classes)
    config = apply_preset(config)
    d, ff, inner = config.d_model, config.d_ff, _attention_width(config)
    lm_head = head == "lm" or _label_words(config, head)
    head_params = d * (config.vocab_size or vocab_size) if lm_head else d * num_classes
    if config.name == "decoder":
        kv = (config.num_kv_heads or config.num_heads) * (inner // config.num_heads)
        layer = 2 * d * inner + 2 * d * kv + 3 * d * ff
        return {"encoder": 0, "decoder": config.num_layers * layer, "head": head_params}
    decoder_layers = (config.num_decoder_layers or config.num_layers) if lm_head else 0
    return {
        "encoder": config.num_layers * (4 * d * inner + 3 * d * ff),
        "decoder": decoder_layers * (8 * d * inner + 3 * d * ff),
        "head": head_params,
    }


def flops_per_token(
    config: mlc.ConfigDict,
    seq_len: int,
    vocab_size: int = 32000,
    *,
    head: str = "lm",
    num_classes: int = 0,
) -> float:
    """Training FLOPs (forward + backward) per token, for model-FLOPs utilisation.

    ``head`` and ``num_classes`` name the task's head as :func:`llama_adv.models.build_model`
    takes them (``task.head``), so the count is what the step computes. Decoder-only with
    an LM head (Kaplan et al. 2020; PaLM appendix B), ``T = seq_len``::

        6 * N + 12 * L * A * T

    with ``N`` the matmul parameters (:func:`matmul_params`, LM head included), ``L``
    blocks and ``A = num_heads * head_dim``; the second term is the ``QK^T`` and ``AV``
    products (2 matmuls x 2 FLOPs x 3 for forward and backward), not discounted for
    causality. A classifier reads one token (decoder: the last real one) or one pooled
    vector (encoder-decoder ``mean``) per example: its ``6 * d_model * num_classes`` is
    an example's, so per token it is divided by the ``T`` tokens of the example::

        6 * N_body + 12 * L * A * T + 6 * d_model * num_classes / T

    Encoder-decoder with source and target both ``seq_len`` long: the FLOPs of one example
    divided by its ``S + T`` tokens (the loop's ``tokens_per_sec`` counts both)::

        [6 (N_enc S + (N_dec + N_head) T)
         + 12 A (L_enc S^2 + L_dec T^2 + L_dec T S)] / (S + T)

    Encoder-decoder classification: the encoder over ``S = seq_len`` and, for
    ``label_words``, the decoder on its one start token (``T = 1``, cross-attention keys
    and values still projected from all ``S`` encoder outputs) and the LM head on it;
    divided by the ``S`` input tokens.
    """
    config = apply_preset(config)
    parts = matmul_params(config, vocab_size, head=head, num_classes=num_classes)
    width = _attention_width(config)
    if config.name == "decoder":
        t = seq_len
        per_token = 6 * parts["decoder"] + 12 * config.num_layers * width * t
        if head == "classification":
            return float(per_token + 6 * parts["head"] / t)
        return float(per_token + 6 * parts["head"])
    s = seq_len
    dense = 6 * parts["encoder"] * s
    attention = 12 * width * config.num_layers * s * s
    if head == "classification":
        if _label_words(config, head):  # one decoder token
            dense += _decoder_dense(config, parts, s, 1)
            attention += 12 * width * (config.num_decoder_layers or config.num_layers) * (1 + s)
        else:
            dense += 6 * parts["head"]
        return float((dense + attention) / s)
    t = seq_len
    dense += _decoder_dense(config, parts, s, t)
    attention += 12 * width * (config.num_decoder_layers or config.num_layers) * (t * t + t * s)
    return float((dense + attention) / (s + t))


def _decoder_dense(config: mlc.ConfigDict, parts: dict[str, int], s: int, t: int) -> int:
    """Training matmul FLOPs of the decoder stack and LM head on ``t`` target tokens; the
    cross-attention key and value projections run on the ``s`` encoder outputs."""
    cross_kv = 2 * config.d_model * _attention_width(config)
    layers = config.num_decoder_layers or config.num_layers
    per_target = parts["decoder"] - layers * cross_kv + parts["head"]
    return 6 * (per_target * t + layers * cross_kv * s)
