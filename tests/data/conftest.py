"""Fixtures for the data tests: the shared real data and a per-session cache.

The real files are found through ``$LLAMA_ADV_DATA_DIR`` or ``../shared/data`` next to the
repository; tests needing them skip with the reason when neither exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llama_adv.config import get_default_config

REPO = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path | None:
    root = Path(os.environ.get("LLAMA_ADV_DATA_DIR", "") or REPO.parent / "shared" / "data")
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("real data not found: set LLAMA_ADV_DATA_DIR or place ../shared/data")
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One prepared-data cache for the whole session: each dataset is prepared once."""
    return tmp_path_factory.mktemp("llama_adv_cache")


@pytest.fixture
def data_config(cache_dir):
    """``data_config(name, **fields)``: a ``data`` section reading from the cache."""

    def make(name: str, **fields):
        config = get_default_config().data
        config.name = name
        config.cache_dir = str(cache_dir)
        for key, value in fields.items():
            config[key] = value
        return config

    return make
