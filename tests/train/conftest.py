"""The uninterrupted reference run the workdir-reliability tests compare with."""

import fcntl
import os
from pathlib import Path

import pytest
from workdir_helpers import each_step_once, keys, load


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted run of ``load()``, trained once for all pytest-xdist workers (in
    their shared temporary folder); copy it before changing anything."""
    from llama_adv.train import train_and_evaluate

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # basetemp is this session's popen-gwN/
        shared = shared.parent
    workdir = shared / "reference_run"
    with open(shared / "reference_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker trains, the others wait for it
        if not (workdir / "summary.json").exists():
            train_and_evaluate(load(), workdir, overwrite=True)
    assert keys(workdir) == each_step_once()
    return workdir
