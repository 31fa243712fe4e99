"""Multi30k BLEU: scored against the raw target texts, not the truncated token targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llama_adv.config import load_config
from llama_adv.data import load_dataset
from llama_adv.data.bleu import bleu_from_ids, ids_to_texts, split_references
from llama_adv.data.tokenizers import EOS, pad_to


def test_references_are_the_raw_targets_and_a_perfect_decode_scores_100(shared_data, data_config):
    ds = load_dataset(data_config("multi30k", data_dir=str(shared_data), target_max_length=24))
    val = ds.split("validation")
    refs = split_references(val, val.tokenizer)
    assert refs == val.references and val.tokenizer is ds.tokenizer
    tok = ds.tokenizer
    full = np.stack([pad_to(tok.encode(r) + [EOS], 512) for r in refs])
    assert bleu_from_ids(tok, full, refs) == pytest.approx(100.0)
    # The 24-byte token targets are cut short: decoding them would not be a perfect score.
    truncated = ids_to_texts(tok, val.arrays["targets"])
    assert truncated[0] != refs[0] and bleu_from_ids(tok, val.arrays["targets"], refs) < 10


@pytest.mark.slow
def test_tiny_multi30k_run_reports_bleu(repo, shared_data, cache_dir, tmp_path):
    from llama_adv.train.loop import train_and_evaluate

    config = load_config(f"{repo / 'configs' / 'multi30k_translate.py'}:tiny", [])
    config.data.data_dir, config.data.cache_dir = str(shared_data), str(cache_dir)
    config.train.progress_bar = False
    summary = train_and_evaluate(config, tmp_path / "run")
    assert 0.0 <= summary["eval"]["bleu"] <= 100.0
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["eval"]["bleu"] == summary["eval"]["bleu"]
