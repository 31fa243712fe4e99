"""A chat run end to end: prompts formatted as in training, `generate` on it, and
`robustness --suite generation` writing its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llama_adv.cli import main
from llama_adv.config import load_config
from llama_adv.data.chat import prompt_ids, turn_frame
from llama_adv.generation.prompts import format_prompt

REPO = Path(__file__).resolve().parents[2]

CHEAP_ATTACKS = (
    "--config.robustness.generation.gcg_steps=3",
    "--config.robustness.generation.gcg_search_width=16",
    "--config.robustness.generation.gcg_topk=8",
    "--config.robustness.generation.embedding_steps=5",
    "--config.robustness.generation.max_new_tokens=12",
    "--config.robustness.generation.behaviour_batch=4",
)


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    from llama_adv.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("chat") / "sft"
    config = load_config(
        f"{REPO / 'configs' / 'chat_sft.py'}:tiny",
        ("train.num_steps=40", "train.progress_bar=False", "data.num_eval=48"),
    )
    train_and_evaluate(config, workdir)
    return workdir, config


def test_prompts_are_formatted_as_the_training_data(chat_run):
    from llama_adv.data import load_dataset

    _, config = chat_run
    dataset = load_dataset(config.data)
    split = dataset.split("validation")
    tokenizer = dataset.tokenizer
    for row in range(3):
        expected = split.arrays["inputs"][row][split.arrays["prompt_mask"][row]]
        ids = format_prompt(config, tokenizer, split.texts[row])
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_array_equal(ids, prompt_ids(tokenizer, split.texts[row]))
    # the attack's layout: the message between the format's prefix (with BOS) and postfix
    prefix, postfix = turn_frame(tokenizer)
    framed = np.concatenate([prefix, tokenizer.encode(split.texts[0]), postfix])
    np.testing.assert_array_equal(framed, prompt_ids(tokenizer, split.texts[0]))


def test_generation_suite_writes_its_report(chat_run, capsys):
    workdir, _ = chat_run
    code = main(["robustness", "--workdir", str(workdir), "--suite", "generation",
                 "--limit", "3", *CHEAP_ATTACKS])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    out = workdir / "robustness" / "generation"
    results = json.loads((out / "results.json").read_text())
    assert results["num_behaviours"] == 3
    assert {"gcg", "embedding"} <= set(results["attacks"])
    assert "heldout_perplexity" in results["utility"]
    assert (out / "table.md").is_file() and (out / "curve.png").is_file()
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert rows and rows[0]["target"].startswith("sure here is how to")


def test_generate_on_a_chat_run_continues_the_formatted_prompt(chat_run, capsys):
    workdir, _ = chat_run
    code = main(["generate", "--workdir", str(workdir), "--prompt", "repeat : apple river",
                 "--max-new-tokens", "4"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "output:" in capsys.readouterr().out


def test_generation_suite_refuses_a_classification_run(tmp_path, capsys):
    from _tiny_runs import train_tiny

    workdir = train_tiny(tmp_path / "clf", "train.num_steps=2")
    code = main(["robustness", "--workdir", str(workdir), "--suite", "generation"])
    assert code == 2
    assert "needs a chat run" in capsys.readouterr().err


def test_generation_suite_on_an_lm_run_reads_a_behaviours_file(tmp_path, capsys):
    from _tiny_runs import LM, train_tiny

    workdir = train_tiny(tmp_path / "lm", *LM, "train.num_steps=2")
    assert main(["robustness", "--workdir", str(workdir), "--suite", "generation"]) == 2
    assert "robustness.generation.behaviours" in capsys.readouterr().err
    csv = tmp_path / "behaviours.csv"
    csv.write_text("goal,target\nred blue,green\nblue red,red green\n")
    code = main(["robustness", "--workdir", str(workdir), "--suite", "generation",
                 f"--config.robustness.generation.behaviours={csv}", *CHEAP_ATTACKS])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    results = json.loads((workdir / "robustness/generation/results.json").read_text())
    assert results["num_behaviours"] == 2 and {"gcg", "embedding"} <= set(results["attacks"])


def test_evaluate_a_chat_file_equals_the_split_it_holds(chat_run, tmp_path, capsys):
    from llama_adv.data import load_dataset

    workdir, config = chat_run
    split = load_dataset(config.data).split("validation")
    rows = [{"instruction": p, "output": r, "harmful": int(h)}
            for p, r, h in zip(split.texts, split.references, split.arrays["harmful"],
                               strict=True)]  # fmt: skip
    path = tmp_path / "validation.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {}
    for name, flag in (("split", ["--split", "validation"]), ("file", ["--file", str(path)])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--workdir", str(workdir), *flag, "--out", str(out)]) == 0
        results[name] = json.loads(out.read_text())["eval"]
    for key, value in results["split"].items():
        np.testing.assert_allclose(results["file"][key], value, rtol=1e-5, err_msg=key)
