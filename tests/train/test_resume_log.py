"""metrics.jsonl after a kill -9, a Ctrl-C or a rerun holds each step once, in order, and
the resumed run reproduces the uninterrupted one's losses bitwise. The runs killed and
interrupted are `python -m llama_adv train` processes; while one runs, a second `train`
on its workdir is refused, and a killed one leaves no lock behind."""

import json
import shutil
import signal

import numpy as np
import pytest
from workdir_helpers import OVERRIDES, REPO, Child, each_step_once, keys, load, losses, rows

from llama_adv.cli import main
from llama_adv.errors import UserError
from llama_adv.train import train_and_evaluate


def test_kill_9_mid_line_then_resume_logs_each_step_once(tmp_path, reference_run, capsys):
    workdir = tmp_path / "run"
    # Killed while writing step 7's line: rows 5 and 6 come after the checkpoint of step 4.
    child = Child(tmp_path, workdir, "kill:6:4")
    code, _, err = child.finish()
    assert code == -9, err
    text = (workdir / "metrics.jsonl").read_text()
    assert text.endswith('"kind": "tr') and '"step": 6' in text

    train_and_evaluate(load(), workdir)  # the kernel dropped the killed run's lock
    assert "resumed from step 4" in capsys.readouterr().out
    assert keys(workdir) == each_step_once()
    assert losses(workdir) == losses(reference_run)  # exact, every step
    assert rows(workdir)[-1] == rows(reference_run)[-1]  # the final evaluation


def test_ctrl_c_logs_the_interrupted_step_then_resumes(tmp_path, reference_run, capsys):
    config = load("train.log_every=2")
    with_log_every = ("train.log_every=2",)
    workdir = tmp_path / "run"
    child = Child(tmp_path, workdir, "block:3", *with_log_every)
    child.wait_blocked()  # trained 3 steps, holds the workdir's lock

    # A second train on the workdir meanwhile: refused in one line naming the first's PID.
    assert child.proc.poll() is None, child.finish()
    before = (workdir / "metrics.jsonl").read_bytes()
    holder = rf"in use by another `llama-adv train` \(PID {child.proc.pid} holds"
    with pytest.raises(UserError, match=holder):
        train_and_evaluate(config, workdir)
    command = ["train", "--config", f"{REPO}/configs/quickstart.py:tiny", "--workdir",
               str(workdir), *(f"--config.{o}" for o in (*OVERRIDES, *with_log_every))]  # fmt: skip
    assert main(command) == 2
    err = capsys.readouterr().err
    assert f"PID {child.proc.pid}" in err and len(err.strip().splitlines()) == 1
    assert (workdir / "metrics.jsonl").read_bytes() == before  # the second wrote nothing

    # SIGTERM takes Ctrl-C's path in the CLI (the sweep tests send SIGINT to their runs).
    child.interrupt(signal.SIGTERM)
    code, _, err = child.finish()
    assert code == 2 and "Interrupted at step 3; checkpoint saved" in err
    assert "Traceback" not in err
    assert keys(workdir) == [(2, "train"), (3, "train")]  # step 3's row was not lost
    assert (workdir / "checkpoints" / "3").is_dir()

    train_and_evaluate(config, workdir)
    assert keys(workdir) == [(s, "train") for s in (2, 3, 4, 6, 8)] + [(8, "eval")]
    sessions = [json.loads(line) for line in (workdir / "sessions.jsonl").open()]
    assert [s["step"] for s in sessions] == [0, 3]  # the refused second train is not one
    got, ref = losses(workdir), losses(reference_run)
    assert got[3] == ref[3] and got[4] == ref[4]  # rows of one step each: bitwise
    for step in (2, 6, 8):  # means of two steps
        assert np.isclose(got[step], np.mean([ref[step - 1], ref[step]]), rtol=1e-6)
    assert rows(workdir)[-1]["loss"] == rows(reference_run)[-1]["loss"]


def test_rerun_of_a_finished_run_changes_nothing(tmp_path, reference_run, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    before = {n: (workdir / n).read_bytes() for n in ("metrics.jsonl", "summary.json")}
    summary = train_and_evaluate(load(), workdir)
    assert "finished at step 8" in capsys.readouterr().out
    assert {n: (workdir / n).read_bytes() for n in before} == before
    assert summary == json.loads(before["summary.json"])


def test_rerun_with_other_eval_settings_replaces_the_final_evaluation(
    tmp_path, reference_run, capsys
):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    old = json.loads((workdir / "summary.json").read_text())
    summary = train_and_evaluate(load("eval.attack.epsilon=3.0"), workdir)
    assert "eval.attack.epsilon 0.3 -> 3.0" in capsys.readouterr().out
    assert keys(workdir) == each_step_once()  # one evaluation row, the new one
    assert rows(workdir)[-1] == {"step": 8, "kind": "eval", **summary["eval"]}
    assert summary["eval"]["loss"] == old["eval"]["loss"]  # same model
    assert summary["eval"]["attack_loss"] != old["eval"]["attack_loss"]  # another attack
    assert summary["step_time_sec"] == old["step_time_sec"]
    assert json.loads((workdir / "config.json").read_text())["eval"]["attack"]["epsilon"] == 3.0
    assert losses(workdir) == losses(reference_run)
