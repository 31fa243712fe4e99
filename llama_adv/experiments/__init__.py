"""Sweeps and reports: experiment files, the sweep runner, tables and plots.

    llama-adv sweep experiments/<name>.py [--parallel N] [--dry-run] [--only PATTERN]
    llama-adv table experiments/<name>.py [--runs-dir runs] [--out results]

An experiment file defines ``get_experiment(arg=None)`` returning an :class:`Experiment`
built from the pieces exported here (see ``llama_adv/experiments/spec.py``).
"""

from llama_adv.experiments.spec import (
    Axis,
    Experiment,
    Level,
    Metric,
    Plot,
    Reference,
    Table,
    accuracy_metrics,
    axis,
    named_axis,
    zip_axis,
)

__all__ = [
    "Axis",
    "Experiment",
    "Level",
    "Metric",
    "Plot",
    "Reference",
    "Table",
    "accuracy_metrics",
    "axis",
    "named_axis",
    "zip_axis",
]
