"""The plots an experiment declares, as PNGs (matplotlib, Agg backend: no display needed).

Every point is a mean over seeds with the sample standard deviation as error bar, taken from
the same cells as the table, so plot and table cannot disagree.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from llama_adv.experiments.aggregate import Cells, Stat, column_label, row_label
from llama_adv.experiments.spec import Experiment, Plot


def _stat(exp: Experiment, cells: Cells, levels: dict[str, str], metric: str) -> Stat:
    return cells[(row_label(exp, levels), column_label(exp, levels))][metric]


def _combos(exp: Experiment, names: list[str]) -> list[dict[str, str]]:
    """Every combination of levels of the axes ``names`` (one empty dict if none)."""
    labels = [exp.axis(n).labels for n in names]
    return [dict(zip(names, c, strict=True)) for c in itertools.product(*labels)]


def _numeric(labels: tuple[str, ...]) -> list[float] | None:
    try:
        return [float(v) for v in labels]
    except ValueError:
        return None


def _series_name(exp: Experiment, plot: Plot, metric: str, others: dict[str, str]) -> str:
    parts = [exp.metric(metric).header] if len(plot.y) > 1 or not others else []
    return ", ".join(parts + [f"{k}={v}" for k, v in others.items()])


def _draw(ax, exp: Experiment, plot: Plot, cells: Cells) -> None:
    if plot.kind == "scatter":
        x_metric, y_metric = exp.metric(plot.x), exp.metric(plot.y[0])
        for levels in _combos(exp, [a.name for a in exp.axes]):
            sx, sy = (_stat(exp, cells, levels, m.name) for m in (x_metric, y_metric))
            if not (sx.n and sy.n):
                continue
            ax.errorbar(sx.mean, sy.mean, xerr=sx.std, yerr=sy.std, fmt="o", capsize=3)
            ax.annotate(", ".join(levels.values()), (sx.mean, sy.mean), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ax.set_xlabel(x_metric.header)
        ax.set_ylabel(y_metric.header)
        return
    x_labels = exp.axis(plot.x).labels
    others = [a.name for a in exp.axes if a.name != plot.x]
    series = [(m, o) for m in plot.y for o in _combos(exp, others)]
    numeric = _numeric(x_labels) if plot.kind == "line" else None
    width = 0.8 / max(len(series), 1)
    for i, (metric, fixed) in enumerate(series):
        stats = [_stat(exp, cells, {**fixed, plot.x: x}, metric) for x in x_labels]
        means = [s.mean if s.n else math.nan for s in stats]
        errors = [s.std if s.n else 0.0 for s in stats]
        name = _series_name(exp, plot, metric, fixed)
        if plot.kind == "line":
            xs = numeric or list(range(len(x_labels)))
            ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=name)
        else:
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(x_labels))]
            ax.bar(xs, means, width, yerr=errors, capsize=2, label=name)
    if numeric is None:
        ax.set_xticks(range(len(x_labels)))
        ax.set_xticklabels(x_labels, rotation=30 if len(x_labels) > 6 else 0, ha="right")
    ax.set_xlabel(plot.x)
    ax.set_ylabel(" / ".join(exp.metric(m).header for m in plot.y))
    if len(series) > 1:
        ax.legend(fontsize=7)


def write_plots(exp: Experiment, cells: Cells, folder: Path) -> list[str]:
    """Writes ``<folder>/<plot name>.png`` for every plot of ``exp`` from the aggregated
    ``cells``; returns the file names."""
    if not exp.plots:
        return []
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    names = []
    for plot in exp.plots:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _draw(ax, exp, plot, cells)
        ax.set_title(plot.title or exp.title or exp.name, fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / f"{plot.name}.png", dpi=120)
        plt.close(fig)
        names.append(f"{plot.name}.png")
    return names
