"""The real-data experiment configs: they load, and (slow) train end to end when shrunk."""

from __future__ import annotations

import json

import pytest

from llama_adv.config import load_config

CONFIGS = ("sst2_decoder", "sst2_encdec", "imdb", "ag_news", "tiny_shakespeare_lm",
           "multi30k_translate")  # fmt: skip
TASKS = {"sst2_decoder": "classification", "sst2_encdec": "classification",
         "imdb": "classification", "ag_news": "classification", "tiny_shakespeare_lm": "lm",
         "multi30k_translate": "seq2seq"}  # fmt: skip


@pytest.mark.parametrize("name", CONFIGS)
def test_config_and_variants_load(repo, name):
    full = load_config(str(repo / "configs" / f"{name}.py"), [])
    tiny = load_config(f"{repo / 'configs' / f'{name}.py'}:tiny,method=fgm", [])
    assert full.task.name == tiny.task.name == TASKS[name]
    assert tiny.train.num_steps < full.train.num_steps and tiny.adv.method == "fgm"
    assert "llama-adv train --config configs/" in (repo / "configs" / f"{name}.py").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_tiny_config_trains_end_to_end(repo, name, shared_data, cache_dir, tmp_path):
    from llama_adv.train.loop import train_and_evaluate

    config = load_config(f"{repo / 'configs' / f'{name}.py'}:tiny", [])
    config.data.data_dir, config.data.cache_dir = str(shared_data), str(cache_dir)
    config.train.progress_bar = False
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["step"] == config.train.num_steps
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["eval"]["loss"] > 0


@pytest.mark.slow
def test_shakespeare_lm_pretraining_then_sst2_finetuning(repo, shared_data, cache_dir, tmp_path):
    from llama_adv.train.loop import train_and_evaluate

    runs = []
    for spec in ("tiny_shakespeare_lm.py:tiny", f"sst2_decoder.py:tiny,init_from={tmp_path}/lm"):
        config = load_config(str(repo / "configs" / spec), [])
        config.data.data_dir, config.data.cache_dir = str(shared_data), str(cache_dir)
        config.train.progress_bar = False
        runs.append(tmp_path / ("lm" if not runs else "sst2"))
        train_and_evaluate(config, runs[-1])
    report = json.loads((runs[1] / "init_report.json").read_text())
    assert report["initialized"] == ["classifier/bias", "classifier/kernel"]
    assert "embedding/embedding" in report["loaded"] and not report["ignored"]
