"""From run summaries to table cells: metric values per run, then mean ± std over seeds.

The standard deviation is the sample standard deviation (``ddof=1``, as papers report
across seeds); with a single seed it is 0. Runs that did not finish are left out, and each
cell keeps ``n``, the number of seeds it averages, so a table can say when some are missing.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from llama_adv.experiments.spec import Experiment, Metric, RunSpec


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of ``n`` values (``nan`` when ``n == 0``)."""

    mean: float
    std: float
    n: int


@dataclasses.dataclass
class RunRecord:
    """A run as the report sees it: its spec, index entry (status, times), summary
    (``None`` unless it finished) and resolved config (``None`` if it does not load)."""

    run: RunSpec
    entry: Mapping[str, Any]
    summary: Mapping[str, Any] | None
    config: Mapping[str, Any] | None = None


def mean_std(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (``ddof=1``) of ``values``; std is 0 for one
    value, and both are ``nan`` for none."""
    n = len(values)
    if n == 0:
        return Stat(math.nan, math.nan, 0)
    mean = math.fsum(values) / n
    if n == 1:
        return Stat(mean, 0.0, 1)
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return Stat(mean, math.sqrt(variance), n)


def lookup(summary: Mapping[str, Any], key: str) -> float | None:
    """The number at dotted ``key`` in ``summary`` (``None`` if absent or not a number)."""
    node: Any = summary
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return float(node)


def _baseline_levels(run: RunSpec, metric: Metric) -> tuple:
    return tuple(sorted({**run.levels, **(metric.relative_to or {})}.items()))


def run_values(exp: Experiment, records: Sequence[RunRecord]) -> dict[str, dict[str, float]]:
    """Run id -> metric name -> reported value, for runs with a summary.

    A metric with ``relative_to`` divides by the value of the run at the named levels with
    the same seed and every other level equal; it is absent if that run has no value.
    """
    by_levels = {
        (tuple(sorted(r.run.levels.items())), r.run.seed): r.summary
        for r in records
        if r.summary is not None
    }
    values: dict[str, dict[str, float]] = {}
    for record in records:
        if record.summary is None:
            continue
        row = {}
        for metric in exp.metrics:
            raw = lookup(record.summary, metric.key)
            if raw is not None and metric.relative_to:
                base_summary = by_levels.get(
                    (_baseline_levels(record.run, metric), record.run.seed)
                )
                base = lookup(base_summary, metric.key) if base_summary else None
                raw = raw / base if base else None
            if raw is not None and math.isfinite(raw):
                row[metric.name] = metric.offset + metric.scale * raw
        values[record.run.id] = row
    return values


def row_label(exp: Experiment, levels: Mapping[str, str]) -> str:
    """The row a run belongs to: its levels of the table's row axes joined by `` / ``."""
    return " / ".join(levels[a] for a in exp.table.rows)


def column_label(exp: Experiment, levels: Mapping[str, str]) -> str:
    """The column group of a run: ``axis=level`` of the column axes (``""`` if none)."""
    return ", ".join(f"{a}={levels[a]}" for a in exp.table.columns)


def row_labels(exp: Experiment) -> list[str]:
    """Every row label, in the order of the axes' levels."""
    combos = itertools.product(*(exp.axis(a).labels for a in exp.table.rows))
    return [" / ".join(c) for c in combos]


def column_labels(exp: Experiment) -> list[str]:
    """Every column group label, in the order of the axes' levels."""
    names = exp.table.columns
    combos = itertools.product(*(exp.axis(a).labels for a in names))
    return [", ".join(f"{a}={v}" for a, v in zip(names, c, strict=True)) for c in combos]


Cells = dict[tuple[str, str], dict[str, Stat]]


def aggregate(exp: Experiment, records: Sequence[RunRecord]) -> Cells:
    """(row label, column label) -> metric name -> :class:`Stat` over seeds.

    Every row and column of the layout is present; a metric no run of a cell has gets
    ``Stat(nan, nan, 0)``.
    """
    values = run_values(exp, records)
    samples: dict[tuple[str, str], dict[str, list[float]]] = {
        (r, c): {m.name: [] for m in exp.metrics}
        for r in row_labels(exp)
        for c in column_labels(exp)
    }
    for record in records:
        cell = (row_label(exp, record.run.levels), column_label(exp, record.run.levels))
        for name, value in values.get(record.run.id, {}).items():
            samples[cell][name].append(value)
    return {
        cell: {name: mean_std(vals) for name, vals in metrics.items()}
        for cell, metrics in samples.items()
    }


def best_rows(exp: Experiment, cells: Cells, metric: Metric, column: str) -> set[str]:
    """The rows whose mean is best for ``metric`` in ``column`` (ties all win; none if the
    metric has no ``best`` direction or no values)."""
    if not metric.best:
        return set()
    means = {
        r: cells[(r, column)][metric.name].mean
        for r in row_labels(exp)
        if cells[(r, column)][metric.name].n
    }
    if not means:
        return set()
    pick = max if metric.best == "max" else min
    target = pick(means.values())
    # Compare as printed: rows equal to the shown precision are equally best.
    return {r for r, m in means.items() if round(m, metric.digits) == round(target, metric.digits)}
