"""Bad input gets a clear error (or is counted when skipping); tokenizers and their cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llama_adv.data import load_dataset, tfds_source
from llama_adv.data.tokenizers import BOS, EOS, PAD, UNK, ByteTokenizer, HFTokenizer
from llama_adv.errors import UserError


def _sst2(folder: Path, train: str, dev: str = "sentence\tlabel\nfine film \t1\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_bytes(train.encode() if isinstance(train, str) else train)
    (folder / "dev.tsv").write_text(dev)
    return folder


GOOD = "sentence\tlabel\na good movie \t1\na bad movie \t0\n"


def test_missing_folder_names_path_and_how_to_get_it(tmp_path, data_config):
    with pytest.raises(UserError, match=r"imdb.*ai\.stanford\.edu"):
        load_dataset(data_config("imdb", data_dir=str(tmp_path)))


def test_missing_location_names_the_variable(data_config, monkeypatch):
    monkeypatch.delenv("LLAMA_ADV_DATA_DIR", raising=False)
    with pytest.raises(UserError, match="LLAMA_ADV_DATA_DIR"):
        load_dataset(data_config("sst2"))


def test_missing_file_names_it(tmp_path, data_config):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text(GOOD)
    with pytest.raises(UserError, match=r"dev\.tsv.*gluebenchmark"):
        load_dataset(data_config("sst2", data_dir=str(tmp_path)))


def test_malformed_row_names_file_and_line(tmp_path, data_config):
    folder = _sst2(tmp_path / "s", GOOD + "no label column here\n")
    with pytest.raises(UserError, match=r"train\.tsv, line 4: expected 2 tab-separated"):
        load_dataset(data_config("sst2", manual_dir=str(folder)))


def test_skip_malformed_counts_rows(tmp_path, data_config, capsys):
    bad = GOOD + "no label\n" + "x\t7\n"
    folder = _sst2(tmp_path / "s", bad.encode() + b"\xff\xfe broken\t1\n")
    ds = load_dataset(data_config("sst2", manual_dir=str(folder), skip_malformed=True))
    assert len(ds.split("train")) == 2
    assert "skipped 3 malformed rows" in capsys.readouterr().out


def test_label_outside_class_set(tmp_path, data_config):
    folder = _sst2(tmp_path / "s", GOOD + "odd one \t2\n")
    with pytest.raises(UserError, match=r"line 4: label '2' is outside the class set"):
        load_dataset(data_config("sst2", manual_dir=str(folder)))


def test_undecodable_bytes(tmp_path, data_config):
    folder = _sst2(tmp_path / "s", GOOD.encode() + b"caf\xe9 \t1\n")
    with pytest.raises(UserError, match=r"line 4: bytes are not valid UTF-8"):
        load_dataset(data_config("sst2", manual_dir=str(folder)))


def test_empty_split(tmp_path, data_config):
    folder = _sst2(tmp_path / "s", GOOD, dev="sentence\tlabel\n")
    with pytest.raises(UserError, match=r"'validation' split .*dev\.tsv is empty"):
        load_dataset(data_config("sst2", manual_dir=str(folder)))


def test_parallel_files_must_align(tmp_path, data_config):
    for lang, text in (("en", "a\nb\n"), ("de", "a\n")):
        (tmp_path / f"train.{lang}").write_text(text)
    config = data_config("parallel_text", manual_dir=str(tmp_path), split_files="train=train")
    with pytest.raises(UserError, match=r"train\.en has 2 lines but .*train\.de has 1"):
        load_dataset(config)


def test_unknown_dataset_lists_project_names(data_config):
    with pytest.raises(UserError, match=r"Unknown dataset 'no_such_set'.*sst2"):
        load_dataset(data_config("no_such_set"))


def test_sentencepiece_trained_once_then_reused(tmp_path, data_config, monkeypatch):
    lines = [f"the {w} movie was {v}" for w in ("good", "bad", "long", "short")
             for v in ("great", "awful", "fine", "dull", "ok")] * 20  # fmt: skip
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    config = data_config("text_corpus", manual_dir=str(tmp_path), tokenizer="sentencepiece",
                         vocab_size=40, max_length=16)  # fmt: skip
    first = load_dataset(config).tokenizer
    assert (first.pad_id, first.bos_id, first.eos_id, first.unk_id) == (PAD, BOS, EOS, UNK)
    assert [first.sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert first.decode(first.encode("the good movie")) == "the good movie"

    def fail(*args, **kwargs):
        raise AssertionError("retrained although the cache holds the model")

    monkeypatch.setattr(tfds_source, "train_sentencepiece", fail)
    second = load_dataset(config).tokenizer
    assert second.model_proto == first.model_proto
    config.vocab_size = 41  # other settings: another cache key, hence training
    with pytest.raises(AssertionError, match="retrained"):
        load_dataset(config)


def test_byte_tokenizer_roundtrip():
    tok = ByteTokenizer()
    ids = tok.encode_batch(["héllo"])[0]
    assert ids.min() > UNK and tok.decode(ids) == "héllo" and ids.tolist() == tok.encode("héllo")


def test_hf_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    hf = HFTokenizer(tmp_path / "tokenizer.json")
    assert (hf.bos_id, hf.eos_id, hf.vocab_size) == (1, 2, 5)
    np.testing.assert_array_equal(hf.encode_batch(["hello world"])[0], [3, 4])
    with pytest.raises(UserError, match="Missing tokenizer file"):
        HFTokenizer(tmp_path / "nope.json")


def test_bleu_helper():
    from llama_adv.data.bleu import bleu_from_ids, corpus_bleu

    refs = ["ein Mann fährt Fahrrad .", "zwei Hunde spielen im Schnee ."]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    tok = ByteTokenizer()
    ids = np.full((2, 40), PAD, np.int32)
    for i, r in enumerate(refs):
        enc = tok.encode(r) + [EOS, 9, 9]  # junk after EOS is ignored
        ids[i, : len(enc)] = enc
    assert bleu_from_ids(tok, ids, refs) == pytest.approx(100.0)
    assert corpus_bleu(["ganz anders"] * 2, refs) < 10
