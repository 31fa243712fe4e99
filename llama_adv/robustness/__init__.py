"""Robustness benchmarking: embedding-space, token and character attacks against a trained
run, external adversarial sets, TextAttack-style metrics, tables and plots."""

from llama_adv.robustness.suite import SUITES, compare_runs, run_robustness

__all__ = ["SUITES", "compare_runs", "run_robustness"]
