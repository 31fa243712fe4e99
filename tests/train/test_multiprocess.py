"""Multi-process runs: two `python -m llama_adv train` processes of two CPU devices each,
joined through --coordinator on 127.0.0.1, train to the losses of one process with four
devices and resume from their own checkpoints; a failure in one process stops both with
one message; bad flags fail fast with one line and exit status 2, writing nothing."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from workdir_helpers import OVERRIDES, REPO, each_step_once, keys, losses, rows

from llama_adv.cli import main
from llama_adv.errors import UserError
from llama_adv.train import distributed
from llama_adv.train.workdir import LOCK_FILE, workdir_lock

CONFIG = f"{REPO / 'configs' / 'quickstart.py'}:tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workdir, *flags: str, num_processes: int = 2, cache=None, timeout: float = 400):
    """Runs ``num_processes`` train processes of two CPU devices each on ``workdir``;
    returns each one's (exit status, stdout, stderr), process 0 first. ``cache``: a
    folder for JAX's compilation cache, so that a second launch skips compiling."""
    port = free_port()
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "2", "PYTHONPATH": path}
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")  # fmt: skip
    command = [sys.executable, "-m", "llama_adv", "train", "--config", CONFIG,
               "--workdir", str(workdir), *(f"--config.{o}" for o in OVERRIDES),
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num_processes),
               *flags]  # fmt: skip
    procs = [subprocess.Popen([*command, "--process-id", str(i)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(num_processes)]  # fmt: skip
    deadline, results = time.monotonic() + timeout, []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            results.append((proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        pytest.fail("a process of the run did not end in time")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def assert_succeeded(results) -> None:
    for i, (code, out, err) in enumerate(results):
        assert code == 0, f"process {i}: {out}\n{err}"


def test_two_processes_train_and_resume_like_one_with_four_devices(tmp_path, reference_run):
    workdir = tmp_path / "run"
    results = launch(workdir, cache=tmp_path / "jax_cache")
    assert_succeeded(results)
    reference = losses(reference_run)
    assert keys(workdir) == each_step_once()  # process 0 alone wrote metrics.jsonl
    assert losses(workdir) == pytest.approx(reference, abs=1e-5)
    assert rows(workdir)[-1]["loss"] == pytest.approx(rows(reference_run)[-1]["loss"], abs=1e-5)
    assert "[train] step 8" in results[0][1] and "[train]" not in results[1][1]
    assert json.loads((workdir / "summary.json").read_text())["step"] == 8
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".")) == [LOCK_FILE]

    # As if killed after the checkpoint of step 4: both processes restore that checkpoint
    # (saved by both), the rows of steps 5 to 8 of the earlier attempt are dropped and
    # trained again to the same losses.
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    shutil.rmtree(resumed / "checkpoints" / "8")
    (resumed / "summary.json").unlink()
    results = launch(resumed, cache=tmp_path / "jax_cache")
    assert_succeeded(results)
    assert "resumed from step 4" in results[0][1]
    assert keys(resumed) == each_step_once()
    assert losses(resumed) == pytest.approx(reference, abs=1e-5)
    assert losses(resumed) == losses(workdir)  # the same processes and devices: exact


def test_a_failure_in_one_process_stops_both_with_its_message(tmp_path):
    workdir = tmp_path / "run"
    with workdir_lock(workdir):  # process 0 cannot take the lock; process 1 never tries
        results = launch(workdir, "--init-timeout", "120")
    for code, _, err in results:
        assert code == 2, err
        assert err.strip().count("\n") == 0 and f"PID {os.getpid()}" in err
    assert sorted(p.name for p in workdir.iterdir()) == [LOCK_FILE]  # nothing written


BAD_FLAGS = [
    (["--num-processes", "2", "--process-id", "0"], "--coordinator missing"),
    (["--coordinator", "127.0.0.1:1234"], "--num-processes, --process-id missing"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"],
     "--process-id 2 is out of range for --num-processes 2"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "-1"],
     "--process-id -1 is out of range"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "0", "--process-id", "0"],
     "--num-processes 0 must be at least 1"),
    (["--coordinator", "127.0.0.1", "--num-processes", "2", "--process-id", "0"],
     "is not HOST:PORT"),
    (["--coordinator", "localhost:http", "--num-processes", "2", "--process-id", "0"],
     "is not HOST:PORT"),
    (["--coordinator", ":1234", "--num-processes", "2", "--process-id", "0"],
     "is not HOST:PORT"),
    (["--coordinator", "127.0.0.1:70000", "--num-processes", "2", "--process-id", "0"],
     "is not HOST:PORT"),
    (["--init-timeout", "0"], "--init-timeout 0 must be a positive number"),
]  # fmt: skip


@pytest.mark.parametrize("flags, message", BAD_FLAGS)
def test_bad_flags_fail_in_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    workdir = tmp_path / "run"
    assert main(["train", "--config", CONFIG, "--workdir", str(workdir), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not workdir.exists()


def unreachable(*flags: str) -> list[str]:
    return ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2", *flags]


def test_an_unreachable_coordinator_fails_after_the_timeout(tmp_path, capsys):
    workdir = tmp_path / "run"
    start = time.monotonic()
    command = ["train", "--config", CONFIG, "--workdir", str(workdir)]
    assert main([*command, *unreachable("--process-id", "1", "--init-timeout", "2")]) == 2
    assert 2 <= time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert "cannot be reached within --init-timeout 2 s" in err and err.count("\n") == 1
    # Process 0 whose partner never comes.
    assert main([*command, *unreachable("--process-id", "0", "--init-timeout", "2")]) == 2
    err = capsys.readouterr().err
    assert "only 1 of 2 processes reached" in err and "missing --process-id 1" in err
    assert not workdir.exists()


def test_a_bad_config_fails_before_the_processes_meet(tmp_path, capsys):
    start = time.monotonic()
    command = ["train", "--config", CONFIG, "--workdir", str(tmp_path / "run"),
               "--config.train.batch_size=0", *unreachable("--process-id", "1")]  # fmt: skip
    assert main(command) == 2
    assert time.monotonic() - start < 10  # not the 60 s --init-timeout
    assert "batch_size" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_processes_started_with_different_counts_are_refused():
    port = free_port()
    errors: list[str] = []

    def join() -> None:
        try:
            distributed._rendezvous(distributed.Processes(f"127.0.0.1:{port}", 3, 1, 10))
        except UserError as error:
            errors.append(str(error))

    thread = threading.Thread(target=join)
    thread.start()
    with pytest.raises(UserError, match="started with --num-processes 3 but process 0 with 2"):
        distributed._rendezvous(distributed.Processes(f"127.0.0.1:{port}", 2, 0, 10))
    thread.join()
    assert errors and "--num-processes 3 but process 0 with 2" in errors[0]


def test_no_flags_outside_a_cluster_is_a_single_process_run(monkeypatch):
    for name in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.parse_options(None, None, None) == distributed.Processes()
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    for name, value in (("SLURM_STEP_NODELIST", "node1"), ("SLURM_NTASKS", "2"),
                        ("SLURM_PROCID", "0"), ("SLURM_LOCALID", "0")):  # fmt: skip
        monkeypatch.setenv(name, value)
    assert distributed.parse_options(None, None, None).cluster == "SlurmCluster"
