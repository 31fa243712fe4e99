"""The uninterrupted reference run the workdir-reliability tests compare with."""

from pathlib import Path

import pytest
from workdir_helpers import each_step_once, keys, load


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted run of ``load()``; copy it before changing anything."""
    from llama_adv.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("reference") / "run"
    train_and_evaluate(load(), workdir)
    assert keys(workdir) == each_step_once()
    return workdir
