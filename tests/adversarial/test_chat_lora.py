"""CAT and LAT fine-tune an imported tiny LLaMA with LoRA on the synthetic chat task:
the whole imported body is loaded (nothing newly initialised) and the attack perturbs."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from llama_adv.cli import main
    from llama_adv.config import get_default_config
    from llama_adv.data import load_dataset

    data = get_default_config().data
    data.name, data.max_length = "synthetic_chat", 24
    vocab = load_dataset(data).vocab_size
    root = tmp_path_factory.mktemp("chat_lora")
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2,
        )
    )  # fmt: skip
    hf.save_pretrained(root / "hf")
    assert main(["import-hf", "--arch", "llama", "--path", str(root / "hf"),
                 "--out", str(root / "imported")]) == 0  # fmt: skip
    return root


@pytest.mark.parametrize(
    "method, section",
    [("cat", ("adv.cat.steps=2", "adv.cat.step_size=0.01")),
     ("lat", ("adv.lat.steps=2", "adv.lat.defense_steps=2", "adv.lat.epsilon=0.5",
              "adv.streams=inputs,layer:1"))],
)  # fmt: skip
def test_lora_fine_tuning_of_an_imported_llama(imported, method, section):
    from llama_adv.config import load_config
    from llama_adv.train import train_and_evaluate

    config = load_config(
        str(imported / "imported" / "config.json"),
        ["data.name=synthetic_chat", "task.name=chat", "data.max_length=24",
         "data.harmful_fraction=0.5",
         "data.num_train=64", "data.num_eval=16", f"train.init_from={imported / 'imported'}",
         "model.lora.rank=4", "model.lora.targets=('q', 'v', 'up')", f"adv.method={method}",
         *section, "train.num_steps=2", "train.batch_size=16", "train.log_every=1",
         "train.progress_bar=False", "eval.batch_size=16", "eval.attack.method=none",
         "checkpoint.best_metric=", "optim.warmup_steps=0"],
    )  # fmt: skip
    workdir = imported / f"run_{method}"
    train_and_evaluate(config, workdir)
    report = json.loads((workdir / "init_report.json").read_text())
    assert report["initialized"] == []
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert len(train) == 2 and all(np.isfinite(r["loss"]) for r in train)
    assert all(r["perturbation_norm"] > 0 for r in train)
    if method == "cat":  # the generation attacks run on the LoRA run and write their report
        from llama_adv.cli import main

        cheap = [f"--config.robustness.generation.{k}" for k in (
            "gcg_steps=2", "gcg_search_width=8", "gcg_topk=4", "embedding_steps=3",
            "max_new_tokens=6", "behaviour_batch=2")]  # fmt: skip
        assert main(["robustness", "--workdir", str(workdir), "--suite", "generation",
                     "--limit", "2", *cheap]) == 0  # fmt: skip
        results = json.loads((workdir / "robustness/generation/results.json").read_text())
        assert results["num_behaviours"] == 2 and "gcg" in results["attacks"]
