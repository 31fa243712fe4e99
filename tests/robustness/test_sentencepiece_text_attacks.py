"""Text attacks on a real SentencePiece run whose examples are cut to ``data.max_length``:
every attack re-encodes texts the way the dataset did, truncation included.

The run: SST-2's first 1,000 training and 200 dev sentences (from the shared data; skipped
without it), a 400-piece unigram model, ``max_length`` 12 (most sentences are longer), the
``tiny`` variant of configs/sst2_decoder.py (4 steps).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from llama_adv.cli import main

REPO = Path(__file__).resolve().parents[2]
MAX_LENGTH = 12


def shared_sst2() -> Path | None:
    root = Path(os.environ.get("LLAMA_ADV_DATA_DIR", "") or REPO.parent / "shared" / "data")
    return root / "sst2" if (root / "sst2" / "dev.tsv").is_file() else None


@pytest.fixture(scope="module")
def spm_run(tmp_path_factory) -> Path:
    from llama_adv.config import load_config
    from llama_adv.train import train_and_evaluate

    source = shared_sst2()
    if source is None:
        pytest.skip("SST-2 not found: set LLAMA_ADV_DATA_DIR or place ../shared/data")
    tmp = tmp_path_factory.mktemp("sst2_spm")
    (tmp / "sst2").mkdir()
    for name, lines in (("train.tsv", 1001), ("dev.tsv", 201)):  # header + sentences
        head = (source / name).read_text().splitlines(keepends=True)[:lines]
        (tmp / "sst2" / name).write_text("".join(head))
    config = load_config(
        f"{REPO / 'configs' / 'sst2_decoder.py'}:tiny,tokenizer=sentencepiece",
        [f"data.manual_dir={tmp / 'sst2'}", f"data.cache_dir={tmp / 'cache'}",
         f"data.max_length={MAX_LENGTH}", "data.length_buckets=()", "data.vocab_size=400",
         "data.train_split=train", "eval.attack.method=none", "train.progress_bar=False"],
    )  # fmt: skip
    train_and_evaluate(config, tmp / "run")
    return tmp / "run"


def test_every_attack_family_runs_on_truncated_sentencepiece_examples(spm_run, tmp_path):
    from llama_adv.robustness.classifier import TextCodec
    from llama_adv.robustness.loading import load_run

    run = load_run(spm_run)
    split = run.exp.dataset.split("validation")
    tok = run.exp.dataset.tokenizer
    lengths = np.array([len(ids) for ids in tok.encode_batch(split.texts)])
    assert type(tok).__name__ == "SentencePieceTokenizer"
    assert np.sum(lengths[:32] > MAX_LENGTH - 1) >= 16  # most are cut (measured: 31 of 32)
    codec = TextCodec(tok, split, check=len(split))  # every example re-encodes exactly
    long_text = " ".join(split.texts[:3])
    (row,) = codec.encode([long_text])
    assert row[-1] == tok.eos_id and np.all(row != 0)  # cut like the dataset: EOS kept

    adv = tmp_path / "adv.json"
    rows = [{"idx": 0, "sentence": long_text, "label": 1},
            {"idx": 1, "sentence": "dull", "label": 0}]  # fmt: skip
    adv.write_text(json.dumps({"sst2": rows}))
    args = ["robustness", "--workdir", str(spm_run), "--limit", "32", "--adv-set", str(adv),
            "--config.robustness.embedding_attacks=('pgd_l2',)",
            "--config.robustness.epsilons=(0.0,0.5)", "--config.robustness.pgd_steps=1",
            "--config.robustness.noise_rates=(0.2,)",
            "--config.robustness.batch_size=32"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((spm_run / "robustness" / "results.json").read_text())
    assert results["skipped"] == {}
    assert set(results["attacks"]) == {"hotflip", "deepwordbug"} | {
        f"noise_{kind}@0.2" for kind in ("delete", "duplicate", "swap")
    }
    assert all(s["num_examples"] == 32 for s in results["attacks"].values())
    assert results["adv_sets"]["adv_set:adv.json:sst2"]["num_examples"] == 2
    assert len(results["embedding"]["pgd_l2"]["points"]) == 2
