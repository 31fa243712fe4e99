"""A run's identity is its defining fields: changing others goes on with a note, changing
one is refused; --overwrite clears everything the old run left."""

import json
import shutil

import pytest
from workdir_helpers import each_step_once, keys, load, losses

from llama_adv.errors import UserError
from llama_adv.train import loop, train_and_evaluate
from llama_adv.train.workdir import LOCK_FILE, is_defining


def test_defining_fields():
    for key in ("model.d_model", "task.name", "data.name", "data.seed", "adv.epsilon",
                "optim.learning_rate", "train.seed", "train.num_steps", "train.batch_size",
                "train.init_from", "train.num_devices"):  # fmt: skip
        assert is_defining(key), key
    for key in ("train.log_every", "train.progress_bar", "train.eval_every", "eval.batch_size",
                "eval.attack.epsilon", "checkpoint.keep", "robustness.limit", "data.data_dir",
                "data.cache_dir", "data.manual_dir"):  # fmt: skip
        assert not is_defining(key), key


def test_other_settings_go_on_with_a_note(tmp_path, reference_run, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    metrics = (workdir / "metrics.jsonl").read_bytes()
    config = load("train.log_every=2", "checkpoint.keep=3", "robustness.limit=5")
    summary = train_and_evaluate(config, workdir)
    out = capsys.readouterr().out
    note = [line for line in out.splitlines() if line.startswith("config changed")]
    assert len(note) == 1
    for change in ("train.log_every 1 -> 2", "checkpoint.keep 2 -> 3", "robustness.limit 0 -> 5"):
        assert change in note[0]
    saved = json.loads((workdir / "config.json").read_text())
    assert (saved["train"]["log_every"], saved["robustness"]["limit"]) == (2, 5)
    assert summary == json.loads((reference_run / "summary.json").read_text())  # finished
    assert (workdir / "metrics.jsonl").read_bytes() == metrics


@pytest.mark.parametrize("change", ["train.seed=1", "adv.epsilon=0.5", "train.num_devices=1"])
def test_a_defining_field_is_refused_and_nothing_changes(tmp_path, reference_run, change):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    before = (workdir / "config.json").read_text()
    field = change.split("=")[0].replace(".", r"\.")
    with pytest.raises(UserError, match=rf"different config \(differs in: {field}\).*--overwrite"):
        train_and_evaluate(load(change), workdir)
    assert (workdir / "config.json").read_text() == before


def test_validation_comes_before_anything_is_written(tmp_path, reference_run, monkeypatch):
    def refuse(config):
        raise UserError("train.batch_size must be positive")

    monkeypatch.setattr(loop, "validate_config", refuse)
    with pytest.raises(UserError, match="batch_size"):
        train_and_evaluate(load(), tmp_path / "new")
    assert not (tmp_path / "new").exists()
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    before = {p.name: p.stat().st_mtime_ns for p in workdir.iterdir()}
    with pytest.raises(UserError, match="batch_size"):
        train_and_evaluate(load("train.log_every=2"), workdir)
    assert {p.name: p.stat().st_mtime_ns for p in workdir.iterdir()} == before


@pytest.mark.parametrize("content", ['{"model": {"name": "deco', "", "[1, 2]"])
def test_a_broken_config_json_is_a_one_line_error(tmp_path, reference_run, content):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    (workdir / "config.json").write_text(content)
    with pytest.raises(UserError) as error:
        train_and_evaluate(load(), workdir)
    message = str(error.value)
    assert str(workdir / "config.json") in message and "--overwrite" in message
    assert "\n" not in message


def test_run_files_without_config_json_are_refused(tmp_path, reference_run):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    (workdir / "config.json").unlink()
    with pytest.raises(UserError, match=r"no config\.json.*--overwrite"):
        train_and_evaluate(load(), workdir)


def test_overwrite_clears_everything_the_old_run_left(tmp_path, reference_run):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    (workdir / "config.json").write_text('{"trunc')  # and whatever else is broken
    (workdir / "robustness").mkdir()
    (workdir / "robustness" / "results.json").write_text("{}")  # the old model's numbers
    (workdir / "train.log").write_text("old attempt\n")
    (workdir / "checkpoints_unreadable").mkdir()
    summary = train_and_evaluate(load("train.seed=1"), workdir, overwrite=True)
    names = {p.name for p in workdir.iterdir()}
    assert names == {"config.json", "sessions.jsonl", "metrics.jsonl", "summary.json",
                     "checkpoints", "tensorboard", LOCK_FILE}  # fmt: skip
    (session,) = [json.loads(line) for line in (workdir / "sessions.jsonl").open()]
    assert session["step"] == 0 and session["commit"] and session["machine"]
    assert len(list((workdir / "tensorboard").iterdir())) == 1
    assert json.loads((workdir / "config.json").read_text())["train"]["seed"] == 1
    assert keys(workdir) == each_step_once()
    assert losses(workdir) != losses(reference_run) and summary["step"] == 8


def test_overwrite_refuses_a_folder_that_holds_no_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="does not look like a run's workdir"):
        train_and_evaluate(load(), tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
