"""Pre-training on IMDB's corpus, then fine-tuning with its vocabulary: the corpus leaves
the test reviews out and packs documents with EOS; a fine-tuned run (decoder and
encoder-decoder) loads the pre-trained body, initialises its head and tokenizes with the
pre-training's SentencePiece model (``data.tokenizer=spm:RUN``), and refuses another one.

A small synthetic ``aclImdb/`` folder stands in for IMDB: every review names its own id,
so the corpus can be checked review by review."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llama_adv.config import load_config
from llama_adv.data import load_dataset
from llama_adv.errors import UserError
from llama_adv.train import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]
WORDS = ["good", "bad", "film", "plot", "actor", "scene", "great", "awful", "boring", "fun"]
FOLDERS = {"train/pos": 12, "train/neg": 12, "train/unsup": 40, "test/pos": 6, "test/neg": 6}


def _review(folder: str, i: int, rng) -> str:
    tag = folder.replace("/", "")  # trainpos, trainunsup, testneg, ...
    return f"{tag}{i:03d} " + " ".join(rng.choice(WORDS, size=30))


@pytest.fixture(scope="module")
def imdb(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imdb")
    rng = np.random.default_rng(0)
    for folder, count in FOLDERS.items():
        (root / "aclImdb" / folder).mkdir(parents=True)
        for i in range(count):
            (root / "aclImdb" / folder / f"{i}_7.txt").write_text(_review(folder, i, rng))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One prepared-data cache for the module: the small IMDB is prepared once."""
    return tmp_path_factory.mktemp("cache")


def _config(name: str, imdb: Path, cache: Path, *overrides: str):
    small = (f"data.manual_dir={imdb}", f"data.cache_dir={cache}", "train.num_steps=2",
             "train.log_every=1", "eval.max_examples=16", "eval.batch_size=16",
             "checkpoint.every_steps=2", "model.num_heads=2")  # fmt: skip
    return load_config(f"{REPO / 'configs' / name}:tiny", (*small, *overrides))


SPM = ("data.tokenizer=sentencepiece", "data.vocab_size=120", "data.train_split=train+unsup",
       "eval.split=unsup[-8:]")  # fmt: skip


def _documents(split, tokenizer) -> list[str]:
    """The texts an lm split packed, cut at its EOS tokens."""
    # Windows have stride max_length: the inputs rows, in order, are the token stream.
    stream = np.append(split.arrays["inputs"].reshape(-1), split.arrays["targets"][-1, -1])
    stream = stream[stream != 0].tolist()
    eos = [i for i, t in enumerate(stream) if t == tokenizer.eos_id]
    assert eos[-1] == len(stream) - 1  # the last document, too, ends with EOS
    return [tokenizer.decode(stream[a + 1 : b]) for a, b in zip([-1, *eos[:-1]], eos, strict=True)]


def test_corpus_excludes_test_reviews_and_ends_documents_with_eos(imdb, cache):
    config = _config("pretrain_decoder_lm.py", imdb, cache, "data.tokenizer=byte",
                     "data.train_split=train+unsup[:90%]", "eval.split=unsup[90%:]")  # fmt: skip
    ds = load_dataset(config.data)
    ids = [t.split()[0] for t in _documents(ds.split(config.data.train_split), ds.tokenizer)]
    assert len(ids) == len(set(ids)) == 24 + 36  # every document once, each ended by EOS
    assert all(i.startswith(("trainpos", "trainneg", "trainunsup")) for i in ids)
    held_out = [t.split()[0] for t in _documents(ds.split(config.eval.split), ds.tokenizer)]
    unsup = {f"trainunsup{i:03d}" for i in range(40)}
    assert len(held_out) == 4 and set(held_out) | set(ids) >= unsup
    assert not set(held_out) & set(ids)


def test_shipped_pretraining_splits_hold_out_validation_and_never_read_test():
    for name in ("pretrain_decoder_lm.py", "pretrain_t5_span.py"):
        config = load_config(str(REPO / "configs" / name))
        assert config.data.train_split == "train+unsup[:99%]"
        assert config.eval.split == "unsup[99%:]"
        assert config.data.tokenizer_split in ("", config.data.train_split)


@pytest.fixture(scope="module")
def pretrained(imdb, cache, tmp_path_factory):
    """(decoder LM run, T5 span-corruption run), two steps each on the small corpus."""
    runs = {}
    for name in ("pretrain_decoder_lm.py", "pretrain_t5_span.py"):
        workdir = tmp_path_factory.mktemp(name.split(".")[0])
        train_and_evaluate(_config(name, imdb, cache, *SPM), workdir)
        runs[name] = workdir
    return cache, runs


@pytest.mark.parametrize(
    "pretrain, finetune, body",
    [("pretrain_decoder_lm.py", "imdb.py", "embed"),
     ("pretrain_t5_span.py", "imdb.py", "shared")],
)  # fmt: skip
def test_finetune_loads_the_body_new_head_and_the_shared_vocabulary(
    pretrained, imdb, tmp_path, pretrain, finetune, body
):
    cache, runs = pretrained
    source = runs[pretrain]
    arch = "model.name=encoder_decoder" if "t5" in pretrain else "model.name=decoder"
    config = _config(finetune, imdb, cache, arch, f"train.init_from={source}",
                     f"data.tokenizer=spm:{source}", "data.train_split=train",
                     "eval.split=test")  # fmt: skip
    train_and_evaluate(config, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "init_report.json").read_text())
    assert report["initialized"] and all("classifier" in k for k in report["initialized"])
    assert any(k.startswith(body) for k in report["loaded"])
    shared = (tmp_path / "run" / "tokenizer.model").read_bytes()
    assert shared == (source / "tokenizer.model").read_bytes()
    if "t5" in pretrain:  # the sentinel ids come along: the embedding has their rows
        assert json.loads((source / "config.json").read_text())["data"]["extra_ids"] == 100


def test_finetune_with_another_vocabulary_is_refused(pretrained, imdb, tmp_path):
    cache, runs = pretrained
    source = runs["pretrain_decoder_lm.py"]
    # SentencePiece of the same size trained on other text: the same shapes, other tokens.
    config = _config("imdb.py", imdb, cache, f"train.init_from={source}", *SPM[:2],
                     "data.tokenizer_split=train", "data.train_split=train",
                     "eval.split=test")  # fmt: skip
    with pytest.raises(UserError, match="another tokenizer"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()


def test_resuming_with_another_tokenizer_is_refused_and_changes_nothing(pretrained, imdb, tmp_path):
    cache, runs = pretrained
    run = tmp_path / "run"
    shutil.copytree(runs["pretrain_decoder_lm.py"], run)
    (run / "tokenizer.model").write_bytes(b"the model this run started with")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="another"):
        train_and_evaluate(_config("pretrain_decoder_lm.py", imdb, cache, *SPM), run)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".train.lock"}
    assert after == {p: b for p, b in before.items() if p.name != ".train.lock"}


def test_bad_shared_tokenizer_paths_are_user_errors(pretrained, imdb, tmp_path):
    cache, _ = pretrained
    (tmp_path / "bad.model").write_text("not a model")
    cases = ((tmp_path / "missing", "does not exist"), (tmp_path, "holds no"),
             (tmp_path / "bad.model", "not a SentencePiece model"))  # fmt: skip
    for spec, match in cases:
        config = _config("imdb.py", imdb, cache, f"data.tokenizer=spm:{spec}")
        with pytest.raises(UserError, match=match):
            load_dataset(config.data)
