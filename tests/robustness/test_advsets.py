import json

import pytest

from llama_adv.errors import UserError
from llama_adv.robustness.advsets import load_adversarial_set


def test_reads_advglue_json_by_task(tmp_path):
    data = {
        "sst2": [
            {"idx": 0, "sentence": "the movie was not good", "label": 0},
            {"idx": 1, "sentence": "a very lovely film", "label": 1},
        ],
        "qqp": [{"idx": 0, "question1": "is it good", "question2": "is it fine", "label": 1}],
    }
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(data))
    assert load_adversarial_set(path, "sst2") == (
        ["the movie was not good", "a very lovely film"],
        [0, 1],
    )
    assert load_adversarial_set(path, "qqp") == (["is it good is it fine"], [1])
    with pytest.raises(UserError, match="sst2"):
        load_adversarial_set(path, "mnli")


def test_reads_tsv_with_optional_header(tmp_path):
    path = tmp_path / "set.tsv"
    path.write_text("sentence\tlabel\nvery good\t1\nbad plot\t0\n")
    assert load_adversarial_set(path) == (["very good", "bad plot"], [1, 0])
