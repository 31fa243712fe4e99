"""Tiny runs for tests of trained-run commands: config overrides of the shrunk quickstart
(``configs/quickstart.py:tiny``) and one training call."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUIET = ("train.progress_bar=False",)

# A decoder-only language model on synthetic_lm (shapes and plumbing, not quality).
LM = ("data.name=synthetic_lm", "task.name=lm", "data.num_eval=16", "eval.attack.method=none",
      "checkpoint.best_metric=")  # fmt: skip

# A tiny encoder-decoder on synthetic_reverse.
SEQ2SEQ = (
    "model.name=encoder_decoder", "data.name=synthetic_reverse", "task.name=seq2seq",
    "data.max_length=8", "data.target_max_length=8", "data.num_eval=40",
    "eval.attack.method=none", "checkpoint.best_metric=", "train.progress_bar=False",
)  # fmt: skip


def train_tiny(workdir: Path, *overrides: str) -> Path:
    """Trains ``configs/quickstart.py:tiny`` with ``overrides`` in ``workdir``."""
    from llama_adv.config import load_config
    from llama_adv.train import train_and_evaluate

    config = load_config(f"{REPO / 'configs' / 'quickstart.py'}:tiny", (*QUIET, *overrides))
    train_and_evaluate(config, workdir)
    return workdir


def trained_once(tmp_path_factory, name: str, train: Callable[[Path], object]) -> Path:
    """This caller's copy of the run ``train(workdir)`` makes, trained once for all
    pytest-xdist workers of the session (in their shared temporary folder, under a file
    lock: one worker trains, the others wait for it), so that a fixture used by tests on
    both workers does not train twice. The copy may be written to."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    source = shared / f"shared-{name}"
    with open(shared / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (source / ".trained").exists():
            shutil.rmtree(source, ignore_errors=True)  # an interrupted earlier attempt
            train(source)
            (source / ".trained").touch()
    copy = tmp_path_factory.mktemp("runs") / name
    shutil.copytree(source, copy)
    return copy
