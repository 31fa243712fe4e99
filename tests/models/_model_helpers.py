"""Tiny models and batches shared by the model tests (imported by conftest and tests)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.config import get_default_config
from llama_adv.models import build_model

VOCAB = 23


def tiny_section(name: str, **fields):
    config = get_default_config().model
    config.name = name
    config.update(
        dict(d_model=32, num_layers=2, num_heads=4, d_ff=48, relative_buckets=8,
             relative_max_distance=16)
    )  # fmt: skip
    config.update(fields)
    return config


def make(name: str, head: str = "lm", num_classes: int = 0, **fields):
    model = build_model(tiny_section(name, **fields), head=head, vocab_size=VOCAB,
                        num_classes=num_classes)  # fmt: skip
    return model


def padded(rng: np.random.Generator, lengths, width) -> jnp.ndarray:
    tokens = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(3, VOCAB, n)
    return jnp.asarray(tokens)


def init(model, batch, seed=0):
    # Jitted: run eagerly, flax's init compiles each of its ~100 operations on its own.
    return jax.jit(model.init)(jax.random.key(seed), batch)
