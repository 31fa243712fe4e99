"""The commands' persistent compilation cache: where it goes and when it is left alone."""

import jax
import pytest

from llama_adv.compile_cache import enable_compile_cache


@pytest.fixture
def jax_cache_config():
    """Restores JAX's cache options after the test."""
    saved = jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_enable_compilation_cache", saved[1])


def test_a_named_cache_is_kept(jax_cache_config, tmp_path):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    assert enable_compile_cache() == tmp_path / "mine"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")


def test_unnamed_cache_goes_beside_the_prepared_data(jax_cache_config, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_ADV_CACHE_DIR", str(tmp_path))
    jax.config.update("jax_compilation_cache_dir", None)
    assert enable_compile_cache() == tmp_path / "jax"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")


def test_switched_off_cache_is_not_named(jax_cache_config):
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_enable_compilation_cache", False)
    assert enable_compile_cache() is None
    assert jax.config.jax_compilation_cache_dir is None
