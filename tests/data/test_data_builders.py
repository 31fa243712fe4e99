"""Each project builder prepares from the real files and yields the documented counts."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from llama_adv.data import load_dataset
from llama_adv.data.tokenizers import EOS


def test_sst2_counts_and_labels(shared_data, data_config):
    ds = load_dataset(data_config("sst2", data_dir=str(shared_data), max_length=64))
    train, dev = ds.split("train"), ds.split("validation")
    assert (len(train), len(dev)) == (67_349, 872)
    assert int(train.arrays["label"].sum()) == 37_569  # positives, per the data README
    assert ds.task == "classification" and ds.class_names == ("negative", "positive")
    # Rows stay aligned with their labels: the text of every example is the TSV's.
    lines = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()[1:]
    rows = {text.strip(): int(label) for text, label in (ln.split("\t") for ln in lines)}
    assert all(rows[t] == y for t, y in zip(dev.texts, dev.arrays["label"], strict=True))
    # Encoded: byte ids then EOS within max_length, ids stable 0..N-1.
    assert dev.arrays["inputs"].shape == (872, 64)
    assert np.all(np.any(dev.arrays["inputs"] == EOS, axis=1))
    np.testing.assert_array_equal(dev.arrays["example_id"], np.arange(872))


def test_ag_news_csv_and_tsv(shared_data, data_config):
    ds = load_dataset(data_config("ag_news", data_dir=str(shared_data)))
    assert ds.class_names == ("World", "Sports", "Business", "Sci/Tech")
    test, train = ds.split("test"), ds.split("train")
    assert len(test) == 7_600 and len(train) == 10_001
    assert np.bincount(test.arrays["label"]).tolist() == [1_900] * 4  # balanced official test
    # The first CSV row is class 3 (Business): "Fears for T N pension after talks".
    first = test.texts.index(next(t for t in test.texts if t.startswith("Fears for T N pension")))
    assert test.arrays["label"][first] == 2


def test_multi30k_translation_pairs(shared_data, data_config):
    ds = load_dataset(data_config("multi30k", data_dir=str(shared_data), target_max_length=48))
    assert ds.task == "seq2seq"
    sizes = {s: len(ds.split(s)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 29_000, "validation": 1_014, "test": 1_000}
    val = ds.split("validation")
    en = (shared_data / "multi30k" / "val.en").read_text().splitlines()
    de = (shared_data / "multi30k" / "val.de").read_text().splitlines()
    pairs = dict(zip(en, de, strict=True))
    assert all(
        pairs[s.strip()].strip() == r for s, r in zip(val.texts, val.references, strict=True)
    )
    a = val.arrays
    np.testing.assert_array_equal(
        a["decoder_inputs"][:, 1:][a["targets"][:, 1:] > 0],
        a["targets"][:, :-1][a["targets"][:, 1:] > 0],
    )
    decoded = ds.tokenizer.decode(a["targets"][0])  # 47 bytes, then EOS
    assert len(decoded.encode()) >= 46 and val.references[0].startswith(decoded)


def test_tiny_shakespeare_through_tfds_manual_dir(shared_data, data_config):
    ds = load_dataset(data_config("tiny_shakespeare", data_dir=str(shared_data), max_length=128))
    assert ds.task == "lm"
    train = ds.split("train")
    # TFDS's split: 90% of 1,115,394 characters -> 1,003,854 bytes, packed in 128-windows.
    tokens = train.arrays["target_weight"].sum()
    assert tokens == 1_003_854 - 1
    np.testing.assert_array_equal(train.arrays["inputs"][1:, 0], train.arrays["targets"][:-1, -1])
    assert ds.tokenizer.decode(train.arrays["inputs"][0]).startswith("First Citizen:")


def test_text_corpus_wikitext(shared_data, data_config):
    ds = load_dataset(data_config("wikitext2", data_dir=str(shared_data), max_length=256))
    assert sorted(ds.splits) == ["test", "validation"]
    valid = ds.split("validation")
    size = (shared_data / "wikitext-2" / "valid.txt").stat().st_size
    assert valid.arrays["target_weight"].sum() == size - 1  # the whole file, each byte once


def _small_imdb(real: Path, out: Path, per_dir: int = 3) -> Path:
    """A tar.gz holding the first ``per_dir`` reviews of each aclImdb folder."""
    wanted = {"test/neg", "test/pos", "train/neg", "train/pos", "train/unsup"}
    taken: dict[str, int] = {}
    archive = out / "aclImdb.tar.gz"
    with tarfile.open(real, "r:gz") as src, tarfile.open(archive, "w:gz") as dst:
        for member in src:
            folder = "/".join(member.name.split("/")[1:3])
            if member.isfile() and folder in wanted and taken.get(folder, 0) < per_dir:
                dst.addfile(member, src.extractfile(member))
                taken[folder] = taken.get(folder, 0) + 1
                if len(taken) == len(wanted) and min(taken.values()) == per_dir:
                    break
    return archive


@pytest.fixture(scope="session")
def small_imdb(shared_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imdb")
    _small_imdb(shared_data / "imdb" / "aclImdb.tar.gz", folder)
    return folder


def test_imdb_from_small_archive(small_imdb, data_config):
    ds = load_dataset(data_config("imdb", manual_dir=str(small_imdb), max_length=256))
    assert sorted(ds.splits) == ["test", "train", "unsup"]
    train, test, unsup = ds.split("train"), ds.split("test"), ds.split("unsup")
    assert (len(train), len(test), len(unsup)) == (6, 6, 3)
    assert sorted(train.arrays["label"].tolist()) == [0, 0, 0, 1, 1, 1]
    assert unsup.arrays["label"].tolist() == [-1, -1, -1]  # unlabelled, weight stays 1
    assert unsup.arrays["weight"].tolist() == [1.0] * 3
    both = ds.split("train+unsup")
    assert len(both) == 9 and (both.arrays["label"] == -1).sum() == 3


def test_imdb_from_extracted_folder(small_imdb, tmp_path, data_config):
    with tarfile.open(small_imdb / "aclImdb.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    ds = load_dataset(data_config("imdb", manual_dir=str(tmp_path)))
    assert len(ds.split("test")) == 6 and len(ds.split("unsup")) == 3


@pytest.mark.slow
def test_imdb_full_counts(shared_data, data_config):
    ds = load_dataset(data_config("imdb", data_dir=str(shared_data), max_length=64))
    sizes = {s: len(ds.split(s)) for s in ("train", "test", "unsup")}
    assert sizes == {"train": 25_000, "test": 25_000, "unsup": 50_000}
    assert int(ds.split("train").arrays["label"].sum()) == 12_500
