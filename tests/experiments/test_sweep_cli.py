"""A tiny sweep on the synthetic task through the CLI, with real training: a failing run is
recorded while the others finish, an interrupted run resumes from its checkpoint, a finished
run is skipped, and ``llama-adv table`` writes every output.

One test, so that under ``pytest -n`` the about one minute of training happens once."""

import json
import shutil

from _sweep_helpers import QUICKSTART

from llama_adv.cli import main

EXPERIMENT = f"""
def get_experiment(arg=None):
    return Experiment(
        config="{QUICKSTART}:tiny",
        overrides=("train.num_steps=24", "train.log_every=6", "checkpoint.every_steps=12",
                   "train.progress_bar=False"),
        axes=(axis("adv.method", ["none", "fgm", "bogus"], name="method"),),
        metrics=accuracy_metrics() + (
            Metric("cost", "step_time_sec", "step time vs none", best="min", digits=2,
                   relative_to={{"method": "none"}}),
        ),
        table=Table(rows=("method",)),
        plots=(Plot("accuracy", "bar", "method", ("accuracy", "attack_accuracy")),),
        title="Tiny sweep",
        scaled_down="24 steps of the quickstart's tiny variant",
    )
"""


def test_sweep_resume_skip_and_table_through_the_cli(write_experiment, tmp_path, capsys):
    spec, runs = write_experiment(EXPERIMENT, name="tiny"), tmp_path / "runs"
    sweep = ["sweep", spec, "--runs-dir", str(runs), "--parallel", "2"]
    assert main(sweep) == 2  # the bogus run failed; the others ran
    err = capsys.readouterr().err
    assert err.startswith("llama-adv: error: 1 of 3 runs failed: method=bogus,seed=0: Unknown")
    root = runs / "tiny"
    index = json.loads((root / "index.json").read_text())
    assert [e["status"] for e in index["runs"].values()] == ["done", "done", "failed"]
    assert "Unknown adversarial method 'bogus'" in index["runs"]["method=bogus,seed=0"]["error"]
    none, fgm = root / "method=none,seed=0", root / "method=fgm,seed=0"
    assert json.loads((fgm / "summary.json").read_text())["step"] == 24

    # Interrupt fgm after step 12: its last checkpoint and summary are gone.
    shutil.rmtree(fgm / "checkpoints" / "24")
    (fgm / "summary.json").unlink()
    finished = (none / "summary.json").stat().st_mtime_ns
    assert main(sweep) == 2  # bogus fails again
    out = capsys.readouterr().out
    assert "1 finished before" in out and "resuming method=fgm,seed=0" in out
    assert "resumed from step 12" in (fgm / "train.log").read_text()
    assert json.loads((fgm / "summary.json").read_text())["step"] == 24
    assert (none / "summary.json").stat().st_mtime_ns == finished  # skipped
    index = json.loads((root / "index.json").read_text())
    attempts = [e["attempts"] for e in index["runs"].values()]
    assert attempts == [1, 2, 2]

    out_dir = tmp_path / "results"
    assert main(["table", spec, "--runs-dir", str(runs), "--out", str(out_dir)]) == 0
    folder = out_dir / "tiny"
    md = (folder / "table.md").read_text()
    assert f"- command: llama-adv table {spec} --runs-dir {runs} --out {out_dir}" in md
    assert "- commit: " in md and "- hardware: runs: " in md and "cores" in md
    rows = {ln.split(" | ")[0][2:]: ln for ln in md.splitlines() if ln.startswith("| ")}
    assert set(rows) == {"method", "none", "fgm", "bogus"}
    assert "1.00" in rows["none"]  # the baseline's own step-time ratio (bold only if fastest)
    assert rows["bogus"] == "| bogus | n/a | n/a | n/a |"
    for name in ("table.csv", "table.tex", "accuracy.png", "manifest.json"):
        assert (folder / name).stat().st_size > 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["done", "done", "failed"]
    assert manifest["runs"][1]["config"]["adv"]["method"] == "fgm"
    assert manifest["runs"][1]["summary"]["step"] == 24
