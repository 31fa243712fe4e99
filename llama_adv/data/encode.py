"""Token ids -> the fixed-width arrays of each batch format.

- classification: ``inputs`` = ids[:max_length-1] + EOS, right-padded (the EOS survives
  truncation so that "last non-pad token" pooling always sees it); ``label``.
- seq2seq: ``encoder_inputs`` as above; ``targets`` = target ids + EOS (truncated the same
  way); ``decoder_inputs`` = BOS + targets[:-1]; ``target_weight`` 1 on real targets.
- lm (packing): the examples' ids are concatenated into one stream (optionally with EOS
  after each) and cut into windows of ``max_length + 1`` tokens with stride ``max_length``,
  so every token except the first is a target exactly once; ``inputs`` = window[:-1],
  ``targets`` = window[1:]; the last, partial window is padded with ``target_weight`` 0.
"""

from __future__ import annotations

import numpy as np

from llama_adv.data.tokenizers import PAD


def fixed_width(ids: list[np.ndarray], length: int, eos: int) -> np.ndarray:
    """``[N, length]`` int32: each row ids[:length-1] + eos, right-padded with PAD."""
    out = np.full((len(ids), length), PAD, np.int32)
    for row, seq in enumerate(ids):
        seq = seq[: length - 1]
        out[row, : len(seq)] = seq
        out[row, len(seq)] = eos
    return out


def classification(ids: list[np.ndarray], labels: np.ndarray, length: int, eos: int) -> dict:
    return {"inputs": fixed_width(ids, length, eos), "label": np.asarray(labels, np.int32)}


def seq2seq(
    src: list[np.ndarray],
    tgt: list[np.ndarray],
    length: int,
    target_length: int,
    bos: int,
    eos: int,
) -> dict:
    targets = fixed_width(tgt, target_length, eos)
    decoder_inputs = np.concatenate(
        [np.full((len(tgt), 1), bos, np.int32), targets[:, :-1]], axis=1
    )
    decoder_inputs[targets == PAD] = PAD  # no BOS-shifted EOS past the end
    return {
        "encoder_inputs": fixed_width(src, length, eos),
        "decoder_inputs": decoder_inputs,
        "targets": targets,
        "target_weight": (targets != PAD).astype(np.float32),
    }


def pack_lm(ids: list[np.ndarray], length: int, eos: int | None) -> dict:
    """Packs a token stream into ``[W, length]`` windows (see the module docstring)."""
    parts = [
        p
        for seq in ids
        for p in ((seq, np.asarray([eos], np.int32)) if eos is not None else (seq,))
    ]
    stream = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
    windows = max(1, -(-(len(stream) - 1) // length))
    padded = np.full(windows * length + 1, PAD, np.int32)
    padded[: len(stream)] = stream
    starts = np.arange(windows)[:, None] * length + np.arange(length + 1)[None, :]
    grid = padded[starts]
    weight = (starts[:, 1:] < len(stream)).astype(np.float32)
    return {"inputs": grid[:, :-1], "targets": grid[:, 1:], "target_weight": weight}
