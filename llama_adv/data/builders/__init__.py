"""The project's TFDS builders for user-placed files, and the names that select them.

``SOURCES[name]`` says which builder prepares dataset ``name``, the folder under the data
root its files live in, how to obtain them, the builder options and the default fields.
A ``builder`` of None means a TFDS registry builder (``tfds_name``) prepared offline from
the folder as its ``manual_dir`` (tiny_shakespeare: the file there matches its checksum).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections as mlc

from llama_adv.data.builders import ag_news, chat, imdb, parallel, sst2, text_corpus
from llama_adv.data.builders.base import ProjectBuilder, SourceConfig, make_config, require
from llama_adv.errors import UserError


def parse_split_files(spec: str) -> dict[str, str]:
    """``"train=a,validation=b"`` -> ``{"train": "a", "validation": "b"}``."""
    out = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        split, sep, name = item.partition("=")
        if not sep or not split.strip() or not name.strip():
            raise UserError(f"data.split_files entry {item!r} is not split=file.")
        out[split.strip()] = name.strip()
    return out


def _corpus_options(config: mlc.ConfigDict, root: Path, default: dict[str, str]) -> dict:
    files = parse_split_files(config.split_files)
    if not files:  # the default names that are present
        files = {s: n for s, n in default.items() if (root / n).exists()} or default
    return {"splits": files}


def _parallel_options(config: mlc.ConfigDict, root: Path, default: dict[str, str]) -> dict:
    src, tgt = config.text_field or "en", config.target_field or "de"
    return {"languages": [src, tgt], "splits": parse_split_files(config.split_files) or default}


def _chat_options(how: str) -> Callable[[mlc.ConfigDict, Path, dict[str, str]], dict]:
    """Chat files: ``data.split_files`` or the default names present; each must exist."""

    def options(config: mlc.ConfigDict, root: Path, default: dict[str, str]) -> dict:
        files = parse_split_files(config.split_files)
        if not files:
            files = {s: n for s, n in default.items() if (root / n).exists()} or default
        for name in files.values():
            require(root / name, how)
        return {"splits": files}

    return options


def _ag_news_options(config: mlc.ConfigDict, root: Path, default: Any) -> dict:
    return {"classes": list(ag_news.read_classes(root))}


@dataclasses.dataclass(frozen=True)
class Source:
    builder: type[ProjectBuilder] | None
    folder: str  # under the data root
    how: str  # how to obtain the files
    options: Callable[[mlc.ConfigDict, Path, Any], dict] | None = None
    default: Any = None  # passed to ``options``
    text_field: str = "text"
    target_field: str = ""
    tfds_name: str = ""


MULTI30K = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
CORPUS = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}

SOURCES: dict[str, Source] = {
    "sst2": Source(sst2.LlamaAdvSst2, "sst2", sst2.HOW),
    "imdb": Source(imdb.LlamaAdvImdb, "imdb", imdb.HOW),
    "ag_news": Source(ag_news.LlamaAdvAgNews, "ag_news", ag_news.HOW, _ag_news_options),
    "multi30k": Source(
        parallel.LlamaAdvParallelText,
        "multi30k",
        parallel.HOW,
        _parallel_options,
        MULTI30K,
        text_field="en",
        target_field="de",
    ),
    "parallel_text": Source(
        parallel.LlamaAdvParallelText,
        "",
        parallel.HOW,
        _parallel_options,
        MULTI30K,
        text_field="en",
        target_field="de",
    ),
    "text_corpus": Source(
        text_corpus.LlamaAdvTextCorpus, "", text_corpus.HOW, _corpus_options, CORPUS
    ),
    "wikitext2": Source(
        text_corpus.LlamaAdvTextCorpus,
        "wikitext-2",
        text_corpus.HOW,
        _corpus_options,
        {"validation": "valid.txt", "test": "test.txt"},
    ),
    "alpaca_seed": Source(
        chat.LlamaAdvChat,
        "alpaca_seed",
        chat.HOW_ALPACA,
        _chat_options(chat.HOW_ALPACA),
        {"train": "seed_tasks.jsonl"},
    ),
    "advbench": Source(
        chat.LlamaAdvChat,
        "advbench",
        chat.HOW_ADVBENCH,
        _chat_options(chat.HOW_ADVBENCH),
        {"train": "harmful_behaviors.csv"},
    ),
    "chat_file": Source(
        chat.LlamaAdvChat,
        "",
        chat.HOW,
        _chat_options(chat.HOW),
        {"train": "train.jsonl", "validation": "validation.jsonl"},
    ),
    "tiny_shakespeare": Source(
        None,
        "tiny_shakespeare",
        "Place input.txt of Karpathy's char-rnn tiny-shakespeare (the file TFDS's "
        "tiny_shakespeare downloads) in the folder.",
        tfds_name="tiny_shakespeare",
    ),
}


def builder_config(name: str, config: mlc.ConfigDict, root: Path) -> SourceConfig:
    """The SourceConfig for project dataset ``name`` with its files in ``root``."""
    source = SOURCES[name]
    options = source.options(config, root, source.default) if source.options else {}
    options["skip_malformed"] = bool(config.skip_malformed)
    return make_config(name, options, root)


__all__ = ["SOURCES", "Source", "builder_config", "parse_split_files"]
