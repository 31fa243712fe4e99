"""The sweep runner's bookkeeping, with a stand-in for ``llama-adv train`` that needs no JAX:
skipping finished runs, recording failures while the others go on, Ctrl-C, --only, locks.
(``test_sweep_cli.py`` runs real training end to end.)"""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from _sweep_helpers import QUICKSTART

from llama_adv.errors import UserError
from llama_adv.experiments import runner
from llama_adv.experiments.index import process_alive, process_identity, read_index, write_index
from llama_adv.experiments.report import load_records
from llama_adv.experiments.runner import FINISHED, INVALID, NEW, RESUME, plan_run, run_sweep
from llama_adv.experiments.spec import expand, load_experiment

# Behaves like `llama-adv train` by adv.method: "bogus" fails with a readable error, "pgd"
# crashes with a traceback, "freelb" trains until SIGINT and then saves a checkpoint.
FAKE_TRAIN = """
import json, sys, time
from pathlib import Path
from llama_adv.config import load_config, to_json

workdir, spec, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
config = load_config(spec, overrides)
workdir.mkdir(parents=True, exist_ok=True)
(workdir / "config.json").write_text(to_json(config) + "\\n")
print("training", config.adv.method, flush=True)
if config.adv.method == "bogus":
    print("llama-adv: error: Unknown adversarial method 'bogus'.", file=sys.stderr)
    sys.exit(2)
if config.adv.method == "pgd":
    raise RuntimeError("boom")
if config.adv.method == "freelb":
    (workdir / "started").touch()
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        (workdir / "checkpoints" / "3").mkdir(parents=True)
        print("llama-adv: error: Interrupted at step 3; checkpoint saved.", file=sys.stderr)
        sys.exit(2)
summary = {"step": config.train.num_steps, "step_time_sec": 0.1,
           "eval": {"accuracy": 0.5 + 0.1 * config.train.seed, "attack_accuracy": 0.25}}
(workdir / "summary.json").write_text(json.dumps(summary))
"""

EXPERIMENT = f"""
def get_experiment(arg=None):
    methods = {{"none": {{}}, "fgm": {{"adv.method": "fgm"}}, "bogus": {{"adv.method": "bogus"}},
               "crash": {{"adv.method": "pgd"}}, "badtype": {{"train.num_steps": "many"}}}}
    if arg == "slow":
        methods = {{"none": {{}}, "slow": {{"adv.method": "freelb"}}}}
    return Experiment(
        config="{QUICKSTART}:tiny",
        axes=(named_axis("method", methods),),
        table=Table(rows=("method",)),
    )
"""


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)

    def command(run, workdir):
        return [sys.executable, str(script), str(workdir), run.config, *run.overrides]

    monkeypatch.setattr(runner, "train_command", command)


def test_failures_are_recorded_and_the_rest_runs_then_finished_runs_are_skipped(
    write_experiment, tmp_path, fake_train
):
    spec, runs_dir, out = write_experiment(EXPERIMENT), tmp_path / "runs", io.StringIO()
    with pytest.raises(UserError, match=r"^3 of 5 runs failed: method=bogus,seed=0: Unknown"):
        run_sweep(spec, runs_dir=runs_dir, parallel=2, out=out, command="sweep 1")
    index = read_index(runs_dir / "exp" / "index.json")
    runs = index["runs"]
    assert list(runs) == [f"method={m},seed=0" for m in ("none", "fgm", "bogus", "crash",
                                                           "badtype")]  # fmt: skip
    status = {i: (e["status"], e["error"]) for i, e in runs.items()}
    assert status["method=none,seed=0"] == ("done", None)
    assert status["method=fgm,seed=0"] == ("done", None)
    assert status["method=bogus,seed=0"] == ("failed", "Unknown adversarial method 'bogus'.")
    assert status["method=crash,seed=0"] == ("failed", "RuntimeError: boom (exit status 1)")
    assert status["method=badtype,seed=0"][0] == "failed"  # caught before any process
    assert "'train.num_steps' expects int" in status["method=badtype,seed=0"][1]
    assert runs["method=badtype,seed=0"]["attempts"] == 0
    assert index["command"] == "sweep 1" and index["commit"]
    done = runs["method=none,seed=0"]
    assert done["attempts"] == 1 and done["wall_time_sec"] > 0 and done["returncode"] == 0
    assert done["command"].startswith("llama-adv train --config ")
    assert "training none" in (runs_dir / "exp" / done["log"]).read_text()
    summary_mtime = (runs_dir / "exp" / "method=none,seed=0" / "summary.json").stat().st_mtime_ns

    # Again: finished runs are skipped, failed ones tried again.
    out = io.StringIO()
    with pytest.raises(UserError, match="3 of 5 runs failed"):
        run_sweep(spec, runs_dir=runs_dir, parallel=2, out=out, command="sweep 2")
    assert "exp: 2 to run (0 resumed), 2 finished before, 1 invalid" in out.getvalue()
    runs = read_index(runs_dir / "exp" / "index.json")["runs"]
    assert runs["method=none,seed=0"]["attempts"] == 1
    assert runs["method=bogus,seed=0"]["attempts"] == 2
    path = runs_dir / "exp" / "method=none,seed=0" / "summary.json"
    assert path.stat().st_mtime_ns == summary_mtime


def test_dry_run_and_only(write_experiment, tmp_path, fake_train):
    spec, runs_dir, out = write_experiment(EXPERIMENT), tmp_path / "runs", io.StringIO()
    counts = run_sweep(spec, runs_dir=runs_dir, dry_run=True, only="method=*m*", out=out)
    # fgm only ("*m*" is a glob)
    assert counts == {"planned": 1, "running": 0, "skipped": 0, "failed": 0}
    assert out.getvalue().startswith("run      method=fgm,seed=0\n")
    assert not runs_dir.exists()  # a dry run writes nothing
    # Several patterns: the runs matching any, in the experiment's order.
    out = io.StringIO()
    assert run_sweep(spec, runs_dir=runs_dir, dry_run=True, only=["crash", "*=none,*"],
                     out=out)["planned"] == 2  # fmt: skip
    assert [ln.split()[1] for ln in out.getvalue().splitlines()[:-1:2]] == [
        "method=none,seed=0", "method=crash,seed=0"
    ]  # fmt: skip
    with pytest.raises(UserError, match="--only 'fmg' matches no run"):
        run_sweep(spec, runs_dir=runs_dir, dry_run=True, only=["fgm", "fmg"], out=out)
    assert run_sweep(spec, runs_dir=runs_dir, only="none", out=out) == {
        "done": 1, "skipped": 0, "failed": 0
    }  # fmt: skip
    runs = read_index(runs_dir / "exp" / "index.json")["runs"]
    assert runs["method=none,seed=0"]["status"] == "done"
    assert runs["method=fgm,seed=0"]["status"] == "pending"  # not selected, not run
    with pytest.raises(UserError, match="--only 'adam' matches no run; run ids look like"):
        run_sweep(spec, runs_dir=runs_dir, only="adam", out=out)


def test_ctrl_c_lets_running_runs_save_then_resume_is_planned(write_experiment, tmp_path,
                                                              fake_train):  # fmt: skip
    spec, runs_dir = write_experiment(EXPERIMENT), tmp_path / "runs"
    started = runs_dir / "exp-slow" / "method=slow,seed=0" / "started"

    def interrupt_when_training():
        deadline = time.time() + 60
        while not started.exists() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in the terminal

    # pytest-xdist workers may not turn SIGINT into KeyboardInterrupt: restore Python's own.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    thread = threading.Thread(target=interrupt_when_training)
    thread.start()
    try:
        with pytest.raises(UserError, match="Sweep interrupted; 1 running run"):
            run_sweep(f"{spec}:slow", runs_dir=runs_dir, only="slow", out=io.StringIO())
    finally:
        thread.join()
        signal.signal(signal.SIGINT, previous)
    entry = read_index(runs_dir / "exp-slow" / "index.json")["runs"]["method=slow,seed=0"]
    assert entry["status"] == "interrupted"
    assert entry["error"] == "Interrupted at step 3; checkpoint saved."
    run = next(r for r in expand(load_experiment(f"{spec}:slow")) if r.levels["method"] == "slow")
    assert plan_run(run, started.parent).state == RESUME


def test_plan_reads_the_workdir(write_experiment, tmp_path):
    from llama_adv.config import load_config, to_json

    exp = load_experiment(write_experiment(EXPERIMENT))
    none, fgm, *_, badtype = expand(exp)
    workdir = tmp_path / "run"
    assert plan_run(none, workdir).state == NEW
    workdir.mkdir()
    (workdir / "config.json").write_text(to_json(load_config(none.config, none.overrides)))
    assert plan_run(none, workdir).state == NEW  # died before its first checkpoint
    (workdir / "checkpoints" / "4").mkdir(parents=True)
    assert plan_run(none, workdir).state == RESUME
    (workdir / "summary.json").write_text(json.dumps({"eval": {}}))
    assert plan_run(none, workdir).state == FINISHED
    stale = plan_run(fgm, workdir)  # the experiment changed since this workdir ran
    assert stale.state == INVALID and "holds a run with a different config" in stale.error
    assert plan_run(badtype, tmp_path / "other").state == INVALID


def test_a_run_made_before_neutral_additions_is_still_the_same_run(write_experiment, tmp_path):
    from llama_adv.config import load_config, to_json

    exp = load_experiment(write_experiment(EXPERIMENT))
    none = expand(exp)[0]
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "4").mkdir(parents=True)
    old = json.loads(to_json(load_config(none.config, none.overrides)))
    del old["mesh"], old["model"]["lora"], old["eval"]["attack"]["radius_unit"]
    (workdir / "config.json").write_text(json.dumps(old))
    assert plan_run(none, workdir).state == RESUME  # those entries' defaults: the old code
    old["adv"].pop("dropout")  # not neutral: a run without it ran the old dropout rule
    (workdir / "config.json").write_text(json.dumps(old))
    assert plan_run(none, workdir).state == INVALID


def test_one_sweep_per_experiment_folder(write_experiment, tmp_path, fake_train):
    spec, runs_dir = write_experiment(EXPERIMENT), tmp_path / "runs"
    with (
        runner._lock(runs_dir / "exp"),
        pytest.raises(UserError, match=r"Another sweep .* is running in"),
    ):
        run_sweep(spec, runs_dir=runs_dir, only="none", out=io.StringIO())


def test_error_is_read_from_the_last_attempt_only(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "=== t0 llama-adv sweep: x\nllama-adv: error: old problem\n"
        "=== t1 llama-adv sweep: x\nTraceback (most recent call last):\nValueError: new\n"
    )
    assert runner.error_from_log(log, 1) == "ValueError: new (exit status 1)"
    assert runner.error_from_log(tmp_path / "missing.log", -9) == "killed by signal 9"


def test_real_datasets_are_prepared_once_each(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or
                        runner.subprocess.CompletedProcess(cmd, 0))  # fmt: skip
    run = expand(load_experiment_for_prepare(tmp_path))[0]

    def planned(data):
        return runner.Planned(run, tmp_path / "w", NEW, config={"data": data})

    sst2, imdb = {"name": "sst2", "max_length": 48}, {"name": "imdb", "max_length": 48}
    todo = [planned(sst2), planned(dict(sst2)), planned(imdb), planned({"name": "synthetic_lm"})]
    runner.prepare_data(todo, tmp_path, lambda text: None)
    assert len(calls) == 2  # sst2 once, imdb once, nothing for synthetic data
    assert calls[0][1:4] == ["-m", "llama_adv.experiments.prepare", "--config"]


def load_experiment_for_prepare(tmp_path):
    path = tmp_path / "prep.py"
    path.write_text(
        "from llama_adv.experiments import Experiment, Table\n"
        f"def get_experiment(arg=None):\n    return Experiment(config='{QUICKSTART}:tiny', "
        "table=Table(rows=()))\n"
    )
    return load_experiment(str(path))


def test_prepare_module_loads_the_splits(capsys):
    from llama_adv.experiments import prepare

    assert prepare.main(["--config", f"{QUICKSTART}:tiny", "--config.data.num_train=32"]) == 0
    assert "synthetic_sentiment[train]: 32 examples" in capsys.readouterr().out
    assert prepare.main(["--config", f"{QUICKSTART}:tiny", "--config.data.nope=1"]) == 2


# `llama-adv sweep` in its own process, with FAKE_TRAIN (argv[1]) standing in for training.
SWEEP_PROCESS = """
import sys
from llama_adv.cli import main
from llama_adv.experiments import runner

fake = sys.argv[1]
runner.train_command = lambda run, workdir: [sys.executable, fake, str(workdir), run.config,
                                             *run.overrides]
sys.exit(main(sys.argv[2:]))
"""


def _wait_for(condition, seconds=60.0):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGKILL", "SIGTERM", "SIGHUP"])  # fmt: skip
def test_a_run_stops_with_its_killed_sweep_and_no_reader_calls_it_running(
    signum, write_experiment, tmp_path, fake_train
):
    """SIGTERM and SIGHUP: the sweep has its run save a checkpoint and records it. SIGKILL:
    the run gets SIGINT from the kernel (PR_SET_PDEATHSIG) and saves; the index still says
    "running", which readers see through (its process is gone), and the next sweep fixes."""
    if signum == signal.SIGKILL and not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    spec = write_experiment(EXPERIMENT) + ":slow"
    runs_dir, driver = tmp_path / "runs", tmp_path / "sweep_process.py"
    driver.write_text(SWEEP_PROCESS)
    root = runs_dir / "exp-slow"
    slow = "method=slow,seed=0"
    sweep = subprocess.Popen(
        [sys.executable, str(driver), str(tmp_path / "fake_train.py"), "sweep", spec,
         "--runs-dir", str(runs_dir), "--only", "slow"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(lambda: (root / slow / "started").exists())
        entry = read_index(root / "index.json")["runs"][slow]
        assert entry["status"] == "running" and process_alive(entry)
    finally:
        sweep.send_signal(signum)
        assert sweep.wait(timeout=60) == (-9 if signum == signal.SIGKILL else 2)
    # The run got SIGINT: it saved a checkpoint and stopped.
    _wait_for(lambda: not process_alive(entry), seconds=30)
    assert (root / slow / "checkpoints" / "3").is_dir()
    left = read_index(root / "index.json")["runs"][slow]
    assert left["status"] == ("running" if signum == signal.SIGKILL else "interrupted")

    out = io.StringIO()  # a dry run shows it by its workdir: interrupted, to resume
    counts = run_sweep(spec, runs_dir=runs_dir, dry_run=True, only="slow", out=out)
    assert counts == {"planned": 1, "running": 0, "skipped": 0, "failed": 0}
    assert out.getvalue().startswith(f"resume   {slow}\n")
    records, _ = load_records(load_experiment(spec), root)  # what `llama-adv table` reads
    settled = {r.run.id: r.entry for r in records}[slow]
    assert settled["status"] == "interrupted" and settled["wall_time_sec"] > 0
    assert settled["error"].endswith("Interrupted at step 3; checkpoint saved.")
    if signum != signal.SIGKILL:
        assert settled["returncode"] == 2 and "note" not in settled
        return
    assert settled["returncode"] is None and "its exit was not recorded" in settled["error"]

    # The next sweep (of another run) writes the settled entry into the index.
    run_sweep(spec, runs_dir=runs_dir, only="none", out=io.StringIO())
    entry = read_index(root / "index.json")["runs"][slow]
    assert entry["status"] == "interrupted" and entry["wall_time_sec"] > 0
    assert "its exit was not recorded" in entry["error"] and entry["note"]


def test_readers_check_the_process_of_a_running_entry(write_experiment, tmp_path):
    """An index left by a killed sweep whose runs went on (no PR_SET_PDEATHSIG, say): a run
    is "running" while its process lives; then it is what its workdir shows."""
    from llama_adv.config import load_config, to_json

    spec = write_experiment(EXPERIMENT)
    exp, root = load_experiment(spec), tmp_path / "runs" / "exp"
    none, fgm, bogus = (r for r in expand(exp)[:3])
    for run in (none, fgm):
        (root / run.id).mkdir(parents=True)
        config = to_json(load_config(run.config, run.overrides))
        (root / run.id / "config.json").write_text(config)
    (root / none.id / "summary.json").write_text(json.dumps({"eval": {"accuracy": 0.5}}))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    alive = {"status": "running", "started": runner._now(), **process_identity(sleeper.pid)}
    reused = {**alive, "pid_start": "another boot/1"}  # the pid now names another process
    write_index(root / "index.json", {"runs": {none.id: alive, fgm.id: alive, bogus.id: reused}})

    def dry_run():
        out = io.StringIO()
        counts = run_sweep(spec, runs_dir=tmp_path / "runs", dry_run=True, out=out)
        return counts, out.getvalue()

    def statuses():
        return {r.run.id: r.entry["status"] for r in load_records(exp, root)[0]}

    try:
        counts, text = dry_run()
        assert counts["running"] == 1  # fgm; none has finished, bogus's process is gone
        assert f"running  {fgm.id}\n         by another sweep since " in text
        assert statuses()[fgm.id] == "running" and statuses()[bogus.id] == "interrupted"
    finally:
        sleeper.kill()
        sleeper.wait()
    counts, text = dry_run()
    assert counts["running"] == 0 and f"run      {fgm.id}\n" in text
    assert statuses() == {none.id: "done", fgm.id: "interrupted", bogus.id: "interrupted",
                          "method=crash,seed=0": "missing",
                          "method=badtype,seed=0": "missing"}  # fmt: skip

    # An entry without a process (an older index) is believed only while the folder is
    # locked: with its lock free, no process of any sweep runs there.
    write_index(root / "index.json", {"runs": {fgm.id: {"status": "running"}}})
    with runner._lock(root):
        assert statuses()[fgm.id] == "running"
    assert statuses()[fgm.id] == "interrupted"
