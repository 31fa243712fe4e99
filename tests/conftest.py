"""Test set-up: four simulated CPU devices, so data parallelism is exercised everywhere."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 4)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def quickstart_config():
    """Returns ``load(variant, *overrides)`` for the shrunk quickstart config."""
    from llama_adv.config import load_config

    def load(variant: str = "tiny", *overrides: str):
        return load_config(f"{REPO / 'configs' / 'quickstart.py'}:{variant}", overrides)

    return load
