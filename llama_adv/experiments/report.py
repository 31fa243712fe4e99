"""Reports: ``results/<experiment>/`` with ``table.md``, ``table.csv``, ``table.tex``, one
PNG per plot and ``manifest.json``.

Reads only the sweep's files (its index and each run's ``config.json`` and
``summary.json``), so a report can be made while a sweep still runs, or on another machine.
Every table states in its header the command that made it, the commit and the hardware.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_adv.errors import UserError
from llama_adv.experiments import provenance
from llama_adv.experiments.aggregate import (
    Cells,
    RunRecord,
    Stat,
    aggregate,
    best_rows,
    column_label,
    column_labels,
    row_label,
    row_labels,
)
from llama_adv.experiments.index import DONE, INDEX_FILE, RUNNING, read_index
from llama_adv.experiments.runner import (
    FINISHED,
    check_folder,
    is_running,
    make_folder,
    plan_run,
    settle_stale,
    sweep_active,
)
from llama_adv.experiments.spec import Experiment, Metric, expand, load_experiment

MISSING = "n/a"  # a cell without any finished run


def load_records(exp: Experiment, runs_root: Path) -> tuple[list[RunRecord], dict[str, Any]]:
    """Every run of ``exp`` with its index entry and, if it finished with the experiment's
    current config, its summary; also the index itself. A "running" entry whose process
    has ended (its sweep was killed) gets the state its workdir shows."""
    index = read_index(runs_root / INDEX_FILE)
    active = sweep_active(runs_root)
    records = []
    for run in expand(exp):
        planned = plan_run(run, runs_root / run.id)
        entry = dict(index["runs"].get(run.id, {}))
        if entry.get("status") == RUNNING and not is_running(entry, active):
            entry = settle_stale(entry, planned)
        summary = None
        if planned.state == FINISHED:
            summary = json.loads((planned.workdir / "summary.json").read_text())
            entry["status"] = DONE  # the workdir is the truth (e.g. run by hand)
        else:
            entry.setdefault("status", "missing")
            if planned.error:
                entry["error"] = planned.error
        records.append(RunRecord(run, entry, summary, planned.config))
    return records, index


def _format(stat: Stat, metric: Metric, seeds: int) -> str:
    if not stat.n:
        return MISSING
    d = metric.digits
    text = f"{stat.mean:.{d}f}" + (f" ± {stat.std:.{d}f}" if stat.n > 1 else "")
    # Fewer seeds than planned: say so rather than let a partial mean pass for a full one.
    return text + (f" ({stat.n}/{seeds})" if stat.n < seeds else "")


class Report:
    """The table of one experiment in every format, and its provenance."""

    def __init__(
        self, exp: Experiment, records: list[RunRecord], index: dict, runs_root: Path, command: str
    ):
        self.exp, self.records, self.index, self.command = exp, records, index, command
        self.runs_root = runs_root
        self.cells: Cells = aggregate(exp, records)
        self.metrics = exp.table_metrics
        self.columns = column_labels(exp)
        self.rows = row_labels(exp)

    # -- provenance ------------------------------------------------------------------

    def header(self) -> list[tuple[str, str]]:
        """(field, text) lines every format prints above its table."""
        exp, entries = self.exp, [r.entry for r in self.records]
        done = sum(e.get("status") == DONE for e in entries)
        failed = sum(e.get("status") == "failed" for e in entries)
        wall = sum(e.get("wall_time_sec") or 0.0 for e in entries)
        commits = sorted({e["commit"] for e in entries if e.get("commit")})
        machines = sorted({e["machine"] for e in entries if e.get("machine")})
        lines = [
            ("experiment", f"{exp.title or exp.name} ({exp.path})"),
            ("command", self.command),
            ("sweep", self.index.get("command") or "no sweep index (runs found by folder)"),
            ("commit", f"{provenance.git_commit()} (table); runs: {', '.join(commits) or '?'}"),
            ("hardware", f"runs: {'; '.join(machines) or '?'}"),
            ("table made on", f"{provenance.machine()['summary']}, {time.strftime('%Y-%m-%d')}"),
            ("config", f"{exp.config} with {' '.join(exp.overrides) or 'no overrides'}"),
            ("seeds", f"{', '.join(map(str, exp.seeds))}: mean ± sample std (ddof=1) over "
                      f"seeds; (k/{len(exp.seeds)}) marks cells missing seeds"),
            ("runs", f"{done} done, {failed} failed, {len(entries) - done - failed} not run "
                     f"of {len(entries)}; {wall / 3600:.2f} h of run wall time"),
        ]  # fmt: skip
        if exp.scaled_down:
            lines.append(("scaled down", exp.scaled_down))
        if exp.budget:
            lines.append(("budget", exp.budget))
        return lines

    # -- the grid --------------------------------------------------------------------

    def column_headers(self) -> list[str]:
        heads = []
        for column in self.columns:
            for metric in self.metrics:
                heads.append(metric.header + (f" [{column}]" if column else ""))
        return heads + [ref.label for ref in self.exp.table.references]

    def grid(self) -> list[tuple[str, list[tuple[str, bool]]]]:
        """Rows of (label, [(cell text, bold)]), missing rows last."""
        seeds = len(self.exp.seeds)
        best = {
            (c, m.name): best_rows(self.exp, self.cells, m, c)
            for c in self.columns
            for m in self.metrics
        }
        rows = []
        for r in self.rows:
            cells = [
                (_format(self.cells[(r, c)][m.name], m, seeds), r in best[(c, m.name)])
                for c in self.columns
                for m in self.metrics
            ]
            rows.append((r, cells + self.reference_cells(r)))
        for r in self.exp.table.missing_rows:
            ours = [(MISSING, False)] * (len(self.columns) * len(self.metrics))
            rows.append((r, ours + self.reference_cells(r)))
        return rows

    def reference_cells(self, row: str) -> list[tuple[str, bool]]:
        cells = []
        for ref in self.exp.table.references:
            value = ref.values.get(row)  # printed as published, not rounded to our digits
            cells.append((MISSING if value is None else f"{value:g}", False))
        return cells

    def notes(self) -> list[str]:
        notes = list(self.exp.table.notes)
        for label, why in self.exp.table.missing_rows.items():
            notes.append(f"Row '{label}' has no run: {why}")
        for ref in self.exp.table.references:
            if ref.note:
                notes.append(f"{ref.label}: {ref.note}")
        failed = [r for r in self.records if r.entry.get("status") == "failed"]
        for record in failed[:10]:
            notes.append(f"Failed run {record.run.id}: {record.entry.get('error')}")
        if len(failed) > 10:
            notes.append(f"... and {len(failed) - 10} more failed runs (manifest.json).")
        return notes

    # -- formats ---------------------------------------------------------------------

    def markdown(self) -> str:
        exp = self.exp
        out = [f"# {exp.title or exp.name}", ""]
        out += [f"- {field}: {text}" for field, text in self.header()]
        first = " / ".join(exp.table.rows)
        heads = [first, *self.column_headers()]
        out += ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for label, cells in self.grid():
            texts = [f"**{t}**" if bold else t for t, bold in cells]
            out.append("| " + " | ".join([label, *texts]) + " |")
        notes = self.notes()
        if notes:
            out += ["", *[f"- {n}" for n in notes]]
        return "\n".join(out) + "\n"

    def csv(self) -> str:
        """One line per row and column group: the levels, then mean, std and n of every
        metric, then the references; provenance as ``#`` comment lines."""
        exp = self.exp
        buffer = io.StringIO()
        for field, text in self.header():
            buffer.write(f"# {field}: {text}\n")
        writer = csv.writer(buffer, lineterminator="\n")
        names = [m.name for m in self.metrics]
        writer.writerow(
            [*exp.table.rows, *exp.table.columns]
            + [f"{n}_{s}" for n in names for s in ("mean", "std", "n")]
            + [ref.label for ref in exp.table.references]
        )
        by_cell = {}
        for record in self.records:  # the levels of each (row, column) cell
            levels = record.run.levels
            key = (row_label(exp, levels), column_label(exp, levels))
            by_cell[key] = levels
        for (r, c), levels in by_cell.items():
            stats = [self.cells[(r, c)][n] for n in names]
            writer.writerow(
                [levels[a] for a in (*exp.table.rows, *exp.table.columns)]
                + [_number(v) for s in stats for v in (s.mean, s.std, s.n)]
                + [_number(ref.values.get(r)) for ref in exp.table.references]
            )
        for r in exp.table.missing_rows:
            writer.writerow(
                [r, *[""] * (len(exp.table.rows) + len(exp.table.columns) - 1)]
                + ["", "", 0] * len(names)
                + [_number(ref.values.get(r)) for ref in exp.table.references]
            )
        return buffer.getvalue()

    def latex(self) -> str:
        """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), provenance as comments."""
        exp = self.exp
        lines = [f"% {field}: {text}" for field, text in self.header()]
        heads = [" / ".join(exp.table.rows), *self.column_headers()]
        lines += [
            r"\begin{tabular}{l" + "r" * (len(heads) - 1) + "}",
            r"\toprule",
            " & ".join(_tex(h) for h in heads) + r" \\",
            r"\midrule",
        ]
        for label, cells in self.grid():
            texts = [_tex(t).replace("±", r"$\pm$") for t, _ in cells]
            texts = [rf"\textbf{{{t}}}" if b else t for t, (_, b) in zip(texts, cells, strict=True)]
            lines.append(" & ".join([_tex(label), *texts]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% note: {n}" for n in self.notes()]
        return "\n".join(lines) + "\n"

    def manifest(self, outputs: Sequence[str]) -> dict[str, Any]:
        exp = self.exp
        runs = []
        for record in self.records:
            runs.append(
                {
                    "id": record.run.id,
                    "levels": dict(record.run.levels),
                    "seed": record.run.seed,
                    "status": record.entry.get("status"),
                    "error": record.entry.get("error"),
                    "wall_time_sec": record.entry.get("wall_time_sec"),
                    "attempts": record.entry.get("attempts"),
                    "commit": record.entry.get("commit"),
                    "machine": record.entry.get("machine"),
                    "config_spec": record.run.config,
                    "overrides": list(record.run.overrides),
                    "config": record.config,
                    "summary": record.summary,
                }
            )
        return {
            "experiment": exp.name,
            "title": exp.title,
            "file": exp.path,
            "command": self.command,
            "commit": provenance.git_commit(),
            "machine": provenance.machine(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "header": dict(self.header()),
            "sweep": {k: self.index.get(k) for k in ("command", "commit", "machine", "updated")},
            "seeds": list(exp.seeds),
            "std": "sample standard deviation over seeds (ddof=1); 0 for one seed",
            "outputs": list(outputs),
            "runs": runs,
        }


def _number(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}  # fmt: skip


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def write_report(
    spec: str, *, runs_dir: str | Path = "runs", out: str | Path = "results", command: str = ""
) -> Path:
    """Writes the report of the experiment file ``spec`` from ``<runs_dir>/<name>``.

    Returns:
      The folder written, ``<out>/<name>``.

    Raises:
      UserError: a bad experiment file or index, no runs in ``runs_dir``, or a folder that
        cannot be written.
    """
    from llama_adv.experiments.plots import write_plots

    check_folder(Path(runs_dir), "--runs-dir")
    check_folder(Path(out), "--out")
    exp = load_experiment(spec)
    runs_root = Path(runs_dir) / exp.name
    check_folder(runs_root, "--runs-dir")
    if not runs_root.is_dir():
        # Not an empty table over the results a clone brings: most likely a wrong folder.
        raise UserError(
            f"No runs of {exp.name} in {runs_root}; run `llama-adv sweep {spec}` first, or "
            "give --runs-dir the folder that holds them."
        )
    records, index = load_records(exp, runs_root)
    report = Report(exp, records, index, runs_root, command or f"llama-adv table {spec}")
    folder = Path(out) / exp.name
    make_folder(folder, "--out")
    try:
        (folder / "table.md").write_text(report.markdown())
        (folder / "table.csv").write_text(report.csv())
        (folder / "table.tex").write_text(report.latex())
        pngs = write_plots(exp, report.cells, folder)
        outputs = ["table.md", "table.csv", "table.tex", *pngs, "manifest.json"]
        manifest = report.manifest(outputs)
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    except OSError as error:  # a read-only folder, a full disk
        where = error.filename or folder
        raise UserError(f"--out: cannot write {where} ({error.strerror}).") from None
    return folder
