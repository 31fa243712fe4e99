"""One `train` per workdir: a second gets a one-line error naming the PID holding the lock
(with a `python -m llama_adv train` process holding it: test_resume_log.py's Ctrl-C test)."""

import os

import pytest
from workdir_helpers import load

from llama_adv.errors import UserError
from llama_adv.train import train_and_evaluate
from llama_adv.train.workdir import LOCK_FILE, workdir_lock


def test_a_held_lock_refuses_a_second_train_and_is_released_after(tmp_path):
    workdir = tmp_path / "run"
    with workdir_lock(workdir):
        assert (workdir / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(UserError, match=rf"in use by another .*\(PID {os.getpid()} holds"):
            train_and_evaluate(load(), workdir)
        with pytest.raises(UserError, match="in use"), workdir_lock(workdir):
            pass
        assert sorted(p.name for p in workdir.iterdir()) == [LOCK_FILE]  # nothing written
    with workdir_lock(workdir):  # released
        pass
