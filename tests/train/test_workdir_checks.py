"""A --workdir that cannot hold a run is a one-line error (exit status 2), before any work;
a NaN stop says which checkpoint, if any, is kept."""

import os

import pytest
from workdir_helpers import OVERRIDES, REPO, load

from llama_adv.cli import main
from llama_adv.errors import UserError
from llama_adv.train import train_and_evaluate
from llama_adv.train.loop import TrainingDiverged


def cli_train(workdir) -> list[str]:
    config = [f"--config.{o}" for o in OVERRIDES]
    return ["train", "--config", f"{REPO}/configs/quickstart.py:tiny", "--workdir", str(workdir),
            *config]  # fmt: skip


@pytest.mark.parametrize(
    ("where", "message"),
    [("file", r"is a file, not a directory"), ("file/run", r"cannot be created: .*file is a file")],
)
def test_workdir_that_is_or_is_under_a_file(tmp_path, capsys, where, message):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=message):
        train_and_evaluate(load(), tmp_path / where)
    assert main(cli_train(tmp_path / where)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llama-adv: error: --workdir")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any permission")
@pytest.mark.parametrize("where", ["locked", "locked/run"])
def test_workdir_that_is_not_writable(tmp_path, where):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0o500)
    try:
        with pytest.raises(UserError, match="not writable"):
            train_and_evaluate(load(), tmp_path / where)
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_not_writable_is_checked_with_access(tmp_path, monkeypatch):
    """What the test above checks, where running as root makes it meaningless."""
    real = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False if p == locked else real(p, mode))
    for where in (locked, locked / "run"):
        with pytest.raises(UserError, match=rf"{locked}.* not writable"):
            train_and_evaluate(load(), where)
    assert not (locked / "run").exists()


@pytest.mark.parametrize("every", [1, 100])
def test_nan_stop_names_the_kept_checkpoint_or_says_none(tmp_path, every):
    config = load("optim.learning_rate=1e30", "optim.grad_clip_norm=0.0",
                  "optim.warmup_steps=0", f"checkpoint.every_steps={every}")  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"not finite at step \d+") as error:
        train_and_evaluate(config, tmp_path)
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    if saved:
        assert f"The last good checkpoint, of step {saved[-1]}, is kept" in str(error.value)
    else:
        assert "No checkpoint was saved before it" in str(error.value)
    assert bool(saved) == (every == 1)


def test_an_option_added_since_at_its_default_is_no_change():
    """A run started before an option existed resumes while it is at its default."""
    from llama_adv.train.workdir import config_changes

    old = {"train": {"batch_size": 8}}
    defaults = {"train": {"batch_size": 32, "microbatches": 1}}
    at_default = {"train": {"batch_size": 8, "microbatches": 1}}
    assert config_changes(old, at_default, defaults) == []
    assert config_changes(old, at_default) == ["train.microbatches"]  # no defaults given
    changed = {"train": {"batch_size": 8, "microbatches": 2}}
    assert config_changes(old, changed, defaults) == ["train.microbatches"]
