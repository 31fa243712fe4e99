"""``llama-adv card``: one run's model, data, tokens seen and evaluations, from its files."""

import json

import pytest
from _tiny_runs import LM, train_tiny

from llama_adv.cli import main
from llama_adv.errors import UserError
from llama_adv.experiments.run_card import run_card


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("card") / "lm"
    return train_tiny(workdir, *LM, "train.num_steps=6", "train.log_every=2",
                      "train.eval_every=4")  # fmt: skip


def test_card_reports_the_run_as_its_files_say(lm_run, tmp_path, capsys):
    config = json.loads((lm_run / "config.json").read_text())
    rows = [json.loads(line) for line in (lm_run / "metrics.jsonl").open()]
    card = run_card(lm_run)
    assert card["steps"] == 6 and card["num_params"] > 0
    # synthetic_lm examples fill the length: the loop counts max_length tokens each
    assert card["tokens_per_example"] == config["data"]["max_length"]
    assert card["tokens_seen"] == 6 * config["train"]["batch_size"] * card["tokens_per_example"]
    assert card["evaluations"] == [r for r in rows if r["kind"] == "eval"]
    assert [e["step"] for e in card["evaluations"]] == [4, 6]
    assert [s["step"] for s in card["sessions"]] == [0]

    assert main(["card", "--workdir", str(lm_run), "--out", str(tmp_path / "card")]) == 0
    text = (tmp_path / "card" / "card.md").read_text()
    assert "| step | loss | perplexity | accuracy | examples |" in text
    assert f"{card['num_params']:,} parameters" in text
    saved = json.loads((tmp_path / "card" / "card.json").read_text())
    assert saved["command"].startswith("llama-adv card --workdir")
    capsys.readouterr()


def test_card_of_an_unfinished_run_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no finished run"):
        run_card(tmp_path)
