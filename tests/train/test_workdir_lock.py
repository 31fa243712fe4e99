"""One `train` per workdir: a second gets a one-line error naming the PID of the first;
a killed run leaves no lock behind."""

import pytest
from workdir_helpers import OVERRIDES, REPO, Child, each_step_once, keys, load, losses

from llama_adv.cli import main
from llama_adv.errors import UserError
from llama_adv.train import train_and_evaluate


def test_second_train_on_a_workdir_is_refused_and_kill_9_releases_the_lock(
    tmp_path, reference_run, capsys
):
    workdir = tmp_path / "run"
    child = Child(tmp_path, workdir, "block:6")
    child.wait_blocked()  # trained 6 steps, holds the lock
    before = (workdir / "metrics.jsonl").read_bytes()
    holder = rf"in use by another `llama-adv train` \(PID {child.proc.pid}"
    with pytest.raises(UserError, match=holder):
        train_and_evaluate(load(), workdir)
    config = ["--config", f"{REPO}/configs/quickstart.py:tiny"]
    config += [f"--config.{o}" for o in OVERRIDES]
    assert main(["train", "--workdir", str(workdir), *config]) == 2
    err = capsys.readouterr().err
    assert f"PID {child.proc.pid}" in err and len(err.strip().splitlines()) == 1
    assert (workdir / "metrics.jsonl").read_bytes() == before  # the second wrote nothing

    child.proc.kill()  # SIGKILL: the kernel drops its lock
    assert child.finish()[0] == -9
    train_and_evaluate(load(), workdir)
    assert keys(workdir) == each_step_once()
    assert losses(workdir) == losses(reference_run)
