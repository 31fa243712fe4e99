"""Test set-up: four simulated CPU devices, so data parallelism is exercised everywhere."""

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the session: the controller names a fresh folder
# before pytest-xdist starts its workers, which (and the CLI processes tests start) inherit
# it, so a program compiled once is read from disk after (about half the time of a file
# of CLI runs). A session starts cold; a cache named by the caller is left as it is.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="llama_adv-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402 (after the environment above)
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


def pytest_unconfigure(config) -> None:
    if _OWN_CACHE and not hasattr(config, "workerinput"):  # the process that made it
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


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
