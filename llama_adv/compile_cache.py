"""JAX's persistent compilation cache, on for the ``llama-adv`` commands.

A sweep's runs share shapes, a resumed run compiles what it compiled before, and the
evaluation commands compile a trained run's programs again: with the cache each of those
compilations after the first is a read from disk (a test-suite file of CLI runs took half
the time with it on this project's CPU machine). The programs are those JAX would compile
anyway; the cache only keeps them, keyed by the program, the JAX version and the devices.

Where: ``JAX_COMPILATION_CACHE_DIR`` when it is set (JAX's own variable, left as it is),
else ``<cache>/jax`` beside the prepared data (``LLAMA_ADV_CACHE_DIR``, else
``~/.cache/llama_adv``). ``JAX_ENABLE_COMPILATION_CACHE=false`` turns it off. JAX keeps
compilations of at least ``jax_persistent_cache_min_compile_time_secs`` (1 s) only. Library
callers of :func:`llama_adv.train.train_and_evaluate` configure JAX themselves.
"""

from __future__ import annotations

from pathlib import Path

from llama_adv.data.paths import cache_root


def enable_compile_cache() -> Path | None:
    """Points JAX's persistent compilation cache at ``<cache>/jax`` unless one is named
    already or the cache is off. Call before the first compilation.

    Returns:
      The folder JAX caches in, or None when the cache is off.
    """
    import jax

    if not jax.config.jax_enable_compilation_cache:
        return None
    if jax.config.jax_compilation_cache_dir:  # JAX_COMPILATION_CACHE_DIR or the caller's
        return Path(jax.config.jax_compilation_cache_dir)
    folder = cache_root() / "jax"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder
