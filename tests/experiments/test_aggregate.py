"""Aggregation (mean and sample std over seeds) and the report formats, on hand-made runs."""

import csv
import io
import json
import math
import statistics

import pytest
from _sweep_helpers import QUICKSTART

from llama_adv.config import load_config, to_json
from llama_adv.experiments.aggregate import RunRecord, Stat, aggregate, best_rows, mean_std
from llama_adv.experiments.index import write_index
from llama_adv.experiments.report import write_report
from llama_adv.experiments.spec import expand, load_experiment


def test_mean_std_is_sample_std_and_zero_for_one_seed():
    stat = mean_std([1.0, 2.0, 3.0, 4.0])
    assert stat.mean == 2.5 and stat.n == 4
    assert stat.std == pytest.approx(statistics.stdev([1, 2, 3, 4]))  # ddof=1
    assert stat.std == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([0.7]) == Stat(0.7, 0.0, 1)  # one seed: std 0
    empty = mean_std([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.std)


EXPERIMENT = f"""
def get_experiment(arg=None):
    return Experiment(
        config="{QUICKSTART}:tiny",
        axes=(axis("adv.method", ["none", "fgm"], name="method"),),
        seeds=(0, 1, 2),
        metrics=accuracy_metrics() + (
            Metric("cost", "step_time_sec", "time vs none", best="min", digits=2,
                   relative_to={{"method": "none"}}),
            Metric("error", "eval.accuracy", "error (%)", scale=-100, offset=100, best="min"),
        ),
        table=Table(
            rows=("method",),
            references=(Reference("Paper", "error", {{"none": 7.39, "both": 6.09}}, "1 LSTM"),),
            missing_rows={{"both": "no method combines them"}},
        ),
        plots=(Plot("acc", "bar", "method", ("accuracy", "attack_accuracy")),
               Plot("cost", "scatter", "cost", ("attack_accuracy",)),
               Plot("line", "line", "method", ("error",))),
        title="Hand-made",
        scaled_down="nothing, these runs are made up",
    )
"""
# (method, seed) -> (accuracy, attack accuracy, step time); fgm's seed 2 failed.
SUMMARIES = {
    ("none", 0): (0.80, 0.10, 0.10),
    ("none", 1): (0.82, 0.20, 0.20),
    ("none", 2): (0.84, 0.30, 0.10),
    ("fgm", 0): (0.85, 0.40, 0.20),
    ("fgm", 1): (0.87, 0.50, 0.30),
}


def _summary(acc, attack, step_time):
    return {"step": 3, "method": "x", "step_time_sec": step_time,
            "eval": {"accuracy": acc, "attack_accuracy": attack, "loss": 0.5}}  # fmt: skip


def test_aggregate_hand_made_summaries(write_experiment):
    exp = load_experiment(write_experiment(EXPERIMENT))
    records = []
    for run in expand(exp):
        values = SUMMARIES.get((run.levels["method"], run.seed))
        records.append(RunRecord(run, {}, _summary(*values) if values else None))
    cells = aggregate(exp, records)
    none, fgm = cells[("none", "")], cells[("fgm", "")]
    assert none["accuracy"].mean == pytest.approx(82.0)
    assert none["accuracy"].std == pytest.approx(2.0)  # sample std of 80, 82, 84
    assert fgm["accuracy"].n == 2 and fgm["accuracy"].mean == pytest.approx(86.0)
    assert fgm["accuracy"].std == pytest.approx(math.sqrt(2))
    # Ratios per seed (0.2/0.1, 0.3/0.2), then mean and std over seeds.
    assert fgm["cost"].mean == pytest.approx(1.75)
    assert fgm["cost"].std == pytest.approx(statistics.stdev([2.0, 1.5]))
    assert none["cost"].mean == 1.0 and none["cost"].std == 0.0
    assert fgm["error"].mean == pytest.approx(14.0)
    assert best_rows(exp, cells, exp.metric("accuracy"), "") == {"fgm"}
    assert best_rows(exp, cells, exp.metric("cost"), "") == {"none"}


def test_report_from_hand_made_workdirs(write_experiment, tmp_path):
    spec = write_experiment(EXPERIMENT)
    exp = load_experiment(spec)
    root = tmp_path / "runs" / exp.name
    entries = {}
    for run in expand(exp):
        workdir = root / run.id
        workdir.mkdir(parents=True)
        (workdir / "config.json").write_text(to_json(load_config(run.config, run.overrides)))
        values = SUMMARIES.get((run.levels["method"], run.seed))
        if values:
            (workdir / "summary.json").write_text(json.dumps(_summary(*values)))
            entries[run.id] = {"status": "done", "wall_time_sec": 60.0, "commit": "abc",
                               "machine": "test machine"}  # fmt: skip
        else:
            entries[run.id] = {"status": "failed", "error": "boom", "wall_time_sec": 5.0}
    write_index(root / "index.json", {"command": "llama-adv sweep x", "runs": entries})

    folder = write_report(spec, runs_dir=tmp_path / "runs", out=tmp_path / "results",
                          command="llama-adv table exp.py")  # fmt: skip
    assert folder == tmp_path / "results" / "exp"
    md = (folder / "table.md").read_text()
    for needed in ("- command: llama-adv table exp.py", "- commit: ", "- hardware: runs: test "
                   "machine", "- scaled down: nothing", "ddof=1", "5 done, 1 failed"):  # fmt: skip
        assert needed in md
    lines = md.splitlines()
    head = next(ln for ln in lines if ln.startswith("| method"))
    assert head == (
        "| method | accuracy (%) | under attack (%) | time vs none | error (%) | Paper |"
    )
    assert "| none | 82.0 ± 2.0 | 20.0 ± 10.0 | **1.00 ± 0.00** | 18.0 ± 2.0 | 7.39 |" in lines
    assert "| fgm | **86.0 ± 1.4 (2/3)** | **45.0 ± 7.1 (2/3)** | 1.75 ± 0.35 (2/3) " \
           "| **14.0 ± 1.4 (2/3)** | n/a |" in lines  # fmt: skip
    assert "| both | n/a | n/a | n/a | n/a | 6.09 |" in lines
    assert "- Row 'both' has no run: no method combines them" in md
    assert "- Failed run method=fgm,seed=2: boom" in md

    text = (folder / "table.csv").read_text()
    assert text.startswith("# experiment: Hand-made")
    rows = list(csv.DictReader(io.StringIO("".join(
        ln + "\n" for ln in text.splitlines() if not ln.startswith("#")))))  # fmt: skip
    assert [r["method"] for r in rows] == ["none", "fgm", "both"]
    assert float(rows[1]["accuracy_mean"]) == pytest.approx(86.0)
    assert float(rows[1]["accuracy_std"]) == pytest.approx(math.sqrt(2), rel=1e-5)
    assert rows[1]["accuracy_n"] == "2" and rows[2]["Paper"] == "6.09"

    tex = (folder / "table.tex").read_text()
    assert r"\textbf{86.0 $\pm$ 1.4 (2/3)}" in tex and r"accuracy (\%)" in tex
    assert tex.startswith("% experiment: Hand-made") and r"\bottomrule" in tex

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["command"] == "llama-adv table exp.py" and manifest["commit"]
    assert manifest["machine"]["cpu_cores"] >= 1
    assert len(manifest["runs"]) == 6
    failed = next(r for r in manifest["runs"] if r["status"] == "failed")
    assert failed["id"] == "method=fgm,seed=2" and failed["error"] == "boom"
    assert failed["config"]["adv"]["method"] == "fgm" and failed["seed"] == 2
    done = manifest["runs"][0]
    assert done["summary"]["eval"]["accuracy"] == 0.80 and done["wall_time_sec"] == 60.0
    for name in ("acc", "cost", "line"):
        assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(manifest["outputs"]) >= {"table.md", "table.csv", "table.tex", "acc.png"}
