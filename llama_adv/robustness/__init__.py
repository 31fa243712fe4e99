"""Robustness benchmarking: embedding-space, token and character attacks against a trained
run, external adversarial sets, TextAttack-style metrics, tables and plots.

``validate_robustness_config`` and ``SUITES`` import without JAX; the attack entry points
(``run_robustness``, ``compare_runs``) load on first use."""

from llama_adv.robustness.validate import SUITES, validate_robustness_config

__all__ = ["SUITES", "compare_runs", "run_robustness", "validate_robustness_config"]


def __getattr__(name: str):
    if name in ("compare_runs", "run_robustness"):
        from llama_adv.robustness import suite

        return getattr(suite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
