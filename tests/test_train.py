"""The one training loop: data parallelism, resume, checkpoints, metrics, failures."""

import json

import jax
import numpy as np
import pytest

from llama_adv.config import load_config
from llama_adv.data.pipeline import TrainStream
from llama_adv.errors import UserError
from llama_adv.train import train_and_evaluate
from llama_adv.train.loop import TrainingDiverged


def train_losses(workdir) -> dict[int, float]:
    """Per-step training loss from metrics.jsonl (the last record of each step wins)."""
    losses = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            losses[record["step"]] = record["loss"]
    return losses


def per_step(quickstart_config, *overrides):
    return quickstart_config("tiny", "train.log_every=1", *overrides)


@pytest.mark.parametrize("method", ["none", "fgm"])
def test_one_and_four_devices_give_the_same_losses(quickstart_config, tmp_path, method):
    assert jax.device_count() == 4
    runs = {}
    for devices in (1, 4):
        config = per_step(quickstart_config, f"adv.method={method}", f"train.num_devices={devices}")
        train_and_evaluate(config, tmp_path / str(devices))
        runs[devices] = train_losses(tmp_path / str(devices))
    assert runs[1].keys() == runs[4].keys() and len(runs[1]) == 6
    np.testing.assert_allclose(list(runs[1].values()), list(runs[4].values()), rtol=2e-5)


def test_killed_and_resumed_run_matches_uninterrupted_bitwise(
    quickstart_config, tmp_path, monkeypatch
):
    config = per_step(quickstart_config, "adv.method=fgm")
    train_and_evaluate(config, tmp_path / "whole")

    original = TrainStream.batch

    def crash_at_5(self, position):
        if position == 5:
            raise RuntimeError("simulated crash")
        return original(self, position)

    monkeypatch.setattr(TrainStream, "batch", crash_at_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_and_evaluate(config, tmp_path / "resumed")
    monkeypatch.setattr(TrainStream, "batch", original)
    assert (tmp_path / "resumed" / "checkpoints" / "4").is_dir()
    train_and_evaluate(config, tmp_path / "resumed")

    whole, resumed = train_losses(tmp_path / "whole"), train_losses(tmp_path / "resumed")
    assert whole == resumed  # exact float equality, every step


def test_ctrl_c_saves_a_checkpoint(quickstart_config, tmp_path, monkeypatch):
    original = TrainStream.batch

    def interrupt_at_3(self, position):
        if position == 3:
            raise KeyboardInterrupt
        return original(self, position)

    monkeypatch.setattr(TrainStream, "batch", interrupt_at_3)
    with pytest.raises(UserError, match="Interrupted at step 3; checkpoint saved"):
        train_and_evaluate(per_step(quickstart_config), tmp_path)
    assert (tmp_path / "checkpoints" / "3").is_dir()


def test_nan_loss_stops_with_the_step_and_keeps_good_checkpoints(quickstart_config, tmp_path):
    config = per_step(quickstart_config, "optim.learning_rate=1e30", "optim.grad_clip_norm=0.0",
                      "optim.warmup_steps=0", "checkpoint.every_steps=1")  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"not finite at step \d+"):
        train_and_evaluate(config, tmp_path)
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    losses = train_losses(tmp_path)
    assert all(np.isfinite(losses[s]) for s in saved)


def test_workdir_with_another_config_is_refused_unless_overwrite(quickstart_config, tmp_path):
    train_and_evaluate(quickstart_config("tiny"), tmp_path)
    other = quickstart_config("tiny", "adv.method=fgm")
    with pytest.raises(UserError, match=r"different config.*adv\.method.*--overwrite"):
        train_and_evaluate(other, tmp_path)
    summary = train_and_evaluate(other, tmp_path, overwrite=True)
    assert summary["method"] == "fgm"
    assert json.loads((tmp_path / "config.json").read_text())["adv"]["method"] == "fgm"


def test_same_command_resumes_and_config_json_reproduces(quickstart_config, tmp_path):
    config = per_step(quickstart_config, "adv.method=fgm")
    first = train_and_evaluate(config, tmp_path / "a")
    again = train_and_evaluate(config, tmp_path / "a")  # finished: resumes at the end
    assert again["eval"] == first["eval"]
    replay = load_config(str(tmp_path / "a" / "config.json"))
    train_and_evaluate(replay, tmp_path / "b")
    assert train_losses(tmp_path / "a") == train_losses(tmp_path / "b")


def test_run_outputs(quickstart_config, tmp_path):
    summary = train_and_evaluate(per_step(quickstart_config, "adv.method=fgm"), tmp_path)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    for key in ("loss", "loss_clean", "loss_adv", "learning_rate", "grad_norm",
                "perturbation_norm", "examples_per_sec", "tokens_per_sec"):  # fmt: skip
        assert all(np.isfinite(r[key]) for r in train), key
    assert all(r["perturbation_norm"] == pytest.approx(0.3, rel=1e-3) for r in train)
    assert any(p.name.startswith("events") for p in (tmp_path / "tensorboard").iterdir())
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert 0.0 <= summary["eval"]["attack_accuracy"] <= summary["eval"]["accuracy"]


def test_checkpoints_keep_last_n_and_best(quickstart_config, tmp_path):
    config = per_step(quickstart_config, "train.num_steps=10", "train.eval_every=2",
                      "checkpoint.keep=2", "checkpoint.best_metric=loss",
                      "checkpoint.best_mode=min")  # fmt: skip
    train_and_evaluate(config, tmp_path)
    evals = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["loss"] for r in evals if r["kind"] == "eval"}
    best = min(evals, key=evals.get)
    kept = {int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()}
    assert {8, 10, best} <= kept and len(kept) <= 3


@pytest.mark.parametrize(
    ("data", "task"), [("synthetic_lm", "lm"), ("synthetic_reverse", "seq2seq")]
)
def test_token_tasks_train(quickstart_config, tmp_path, data, task):
    config = quickstart_config("tiny,method=fgm", f"data.name={data}", f"task.name={task}")
    summary = train_and_evaluate(config, tmp_path)
    assert np.isfinite(summary["eval"]["perplexity"])
    assert summary["eval"]["attack_loss"] >= summary["eval"]["loss"] - 1e-6


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("adv.method=fgn", r"Unknown adversarial method 'fgn'.*Did you mean 'fgm'.*Valid"),
        ("model.name=llama", r"Unknown model 'llama'.*Valid models: .*decoder"),
        ("data.name=sst3", r"Unknown dataset 'sst3'.*Valid datasets"),
        ("task.name=regression", r"task.name='regression' is invalid.*classification, lm, seq2seq"),
        ("train.batch_size=6", r"train.batch_size=6 is not divisible by the 4 devices"),
        ("task.name=lm", r"classification dataset but task.name is 'lm'"),
    ],
)
def test_bad_names_are_clear_errors_and_write_nothing(quickstart_config, tmp_path, override,
                                                      message):  # fmt: skip
    with pytest.raises(UserError, match=message):
        train_and_evaluate(quickstart_config("tiny", override), tmp_path / "run")
    assert not (tmp_path / "run").exists()
