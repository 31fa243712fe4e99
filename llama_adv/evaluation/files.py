"""A user file as an evaluation :class:`~llama_adv.data.base.Split` of a run's dataset:
read here, encoded with the run's tokenizer and laid out like the dataset's own splits
(:mod:`llama_adv.data.encode`), so no TFDS preparation and no new tokenizer is involved.

Formats, by the dataset's task:

- classification: ``text<TAB>label`` lines (label: class id or class name; a first line
  whose label is neither is a header), or ``.jsonl`` objects ``{"text", "label"}``;
- lm: plain text, one example per line (the ``text_corpus`` layout), or ``.jsonl``
  objects ``{"text"}``;
- seq2seq: ``source<TAB>target`` lines, ``.jsonl`` objects ``{"source", "target"}``, or a
  line-aligned pair ``STEM.<src>`` / ``STEM.<tgt>`` (the ``parallel_text`` layout; pass
  ``STEM`` or ``STEM.<src>``; languages are ``data.text_field`` / ``data.target_field``,
  by default en / de);
- chat: the chat files of the ``chat_file`` dataset (Alpaca-style ``.json`` / ``.jsonl``,
  AdvBench-style ``.csv``; :mod:`llama_adv.data.builders.chat`), in the run's chat format.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections as mlc
import numpy as np

from llama_adv.data import encode
from llama_adv.data.base import Dataset, Split
from llama_adv.errors import UserError

FORMATS = {
    "classification": "text<TAB>label lines or .jsonl {text, label}",
    "lm": "plain text lines or .jsonl {text}",
    "seq2seq": "source<TAB>target lines, .jsonl {source, target}, or STEM.<src>/STEM.<tgt>",
    "chat": "Alpaca-style .json/.jsonl or AdvBench-style .csv chat files",
}


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"--file {path} is not UTF-8 text ({error.reason}).") from None
    except OSError as error:
        raise UserError(f"--file {path} cannot be read: {error.strerror}.") from None
    return [line.rstrip("\r\n") for line in text.splitlines()]


def _jsonl(path: Path, fields: tuple[str, ...]) -> list[tuple]:
    """``[(row[f] for f in fields), ...]`` of each non-empty line's JSON object."""
    rows = []
    for number, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: not a JSON object ({error.msg}).") from None
        if not isinstance(row, dict) or any(f not in row for f in fields):
            raise UserError(f"{path}:{number}: expected an object with {', '.join(fields)}.")
        rows.append(tuple(row[f] for f in fields))
    return rows


def _tsv(path: Path, what: str) -> list[tuple[str, str]]:
    rows = []
    for number, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        left, sep, right = line.rpartition("\t")
        if not sep:
            raise UserError(f"{path}:{number}: expected {what}, got no TAB.")
        rows.append((number, left, right.strip()))
    return rows


def _label(value, names: dict[str, int], num_classes: int, where: str) -> int | None:
    """A class id of ``value`` (id or class name); None when it is neither."""
    if isinstance(value, str) and value in names:
        return names[value]
    try:
        label = int(value)
    except (TypeError, ValueError):
        return None
    if not 0 <= label < num_classes:
        raise UserError(
            f"{where}: label {label} is outside this run's classes 0..{num_classes - 1}."
        )
    return label


def _classification(path: Path, dataset: Dataset, config: mlc.ConfigDict) -> Split:
    names = {n: i for i, n in enumerate(dataset.class_names)}
    n = dataset.num_classes or config.task.num_classes
    texts, labels = [], []
    if path.suffix == ".jsonl":
        for i, (text, value) in enumerate(_jsonl(path, ("text", "label"))):
            label = _label(value, names, n, f"{path}: row {i}")
            if label is None:
                raise UserError(f"{path}: row {i}: label {value!r} is not a class id or name.")
            texts.append(str(text))
            labels.append(label)
    else:
        for k, (number, text, value) in enumerate(_tsv(path, "text<TAB>label")):
            label = _label(value, names, n, f"{path}:{number}")
            if label is None and k == 0:
                continue  # a header
            if label is None:
                raise UserError(f"{path}:{number}: label {value!r} is not a class id or name.")
            texts.append(text)
            labels.append(label)
    _non_empty(texts, path)
    tok = dataset.tokenizer
    ids = tok.encode_batch(texts)
    arrays = encode.classification(ids, np.asarray(labels), config.data.max_length, tok.eos_id)
    return Split(arrays, texts)


def _lm(path: Path, dataset: Dataset, config: mlc.ConfigDict) -> Split:
    if path.suffix == ".jsonl":
        texts = [str(t) for (t,) in _jsonl(path, ("text",))]
    else:
        texts = _lines(path)
    _non_empty([t for t in texts if t.strip()], path)
    tok = dataset.tokenizer
    if config.data.name.startswith("synthetic"):  # its stream: BOS sentence EOS, ...
        ids = [np.asarray([tok.bos_id, *tok.encode(t), tok.eos_id], np.int32) for t in texts]
        eos = None
    else:  # text_corpus: each line with its newline, EOS after it with data.pack_eos
        ids = tok.encode_batch([t + "\n" for t in texts])
        eos = tok.eos_id if config.data.pack_eos else None
    return Split(encode.pack_lm(ids, config.data.max_length, eos))


def _pair_paths(path: Path, config: mlc.ConfigDict) -> tuple[Path, Path] | None:
    """``(STEM.<src>, STEM.<tgt>)`` when ``path`` names one side of a parallel pair."""
    src, tgt = config.data.text_field or "en", config.data.target_field or "de"
    stem = path.with_name(path.name[: -len(src) - 1]) if path.name.endswith(f".{src}") else path
    pair = stem.with_name(f"{stem.name}.{src}"), stem.with_name(f"{stem.name}.{tgt}")
    return pair if all(p.is_file() for p in pair) else None


def _seq2seq(path: Path, dataset: Dataset, config: mlc.ConfigDict) -> Split:
    pair = _pair_paths(path, config)
    if pair is not None:
        sources, targets = (_lines(p) for p in pair)
        if len(sources) != len(targets):
            raise UserError(f"{pair[0]} has {len(sources)} lines but {pair[1]} has "
                            f"{len(targets)}; parallel files must be line-aligned.")  # fmt: skip
        rows = [(s.strip(), t.strip()) for s, t in zip(sources, targets, strict=True)]
        rows = [r for r in rows if r[0] and r[1]]
    elif path.suffix == ".jsonl":
        rows = [(str(s), str(t)) for s, t in _jsonl(path, ("source", "target"))]
    else:
        rows = [(s, t) for _, s, t in _tsv(path, "source<TAB>target")]
    _non_empty(rows, path)
    tok = dataset.tokenizer
    sources, targets = [r[0] for r in rows], [r[1] for r in rows]
    # The synthetic task's targets are as wide as its inputs; real data's are configured.
    width = config.data.max_length if config.data.name.startswith("synthetic") else (
        config.data.target_max_length)  # fmt: skip
    arrays = encode.seq2seq(tok.encode_batch(sources), tok.encode_batch(targets),
                            config.data.max_length, width, tok.bos_id, tok.eos_id)  # fmt: skip
    return Split(arrays, sources, targets)


def _chat(path: Path, dataset: Dataset, config: mlc.ConfigDict) -> Split:
    from llama_adv.data.builders.base import RowChecker
    from llama_adv.data.builders.chat import read_chat_file
    from llama_adv.data.chat import chat_split

    rows = [row for _, row in read_chat_file(path, RowChecker(config.data.skip_malformed))]
    _non_empty(rows, path)
    return chat_split(
        dataset.tokenizer,
        [r["prompt"] for r in rows],
        [r["response"] for r in rows],
        [r["away"] for r in rows],
        [r["harmful"] for r in rows],
        config.data.max_length,
        config.data.chat_refusal,
    )


def _non_empty(rows: list, path: Path) -> None:
    if not rows:
        raise UserError(f"--file {path} holds no examples.")


def check_file(path: str | Path, dataset_task: str, config: mlc.ConfigDict) -> Path:
    """``path`` when it can be read for a ``dataset_task`` run (before loading the run).

    Raises:
      UserError: the file is missing, or the task has no file format.
    """
    path = Path(path)
    if dataset_task not in FORMATS:
        raise UserError(
            f"evaluate --file reads {', '.join(FORMATS)} files; this run's task is "
            f"{dataset_task}: evaluate one of its dataset's splits with --split."
        )
    exists = path.is_file() or (dataset_task == "seq2seq" and _pair_paths(path, config))
    if not exists:
        raise UserError(f"--file {path} does not exist ({dataset_task} runs read "
                        f"{FORMATS[dataset_task]}).")  # fmt: skip
    return path


def split_from_file(path: str | Path, dataset: Dataset, config: mlc.ConfigDict) -> Split:
    """The examples of ``path`` (see the module docstring) as a split of ``dataset``.

    Raises:
      UserError: a missing, unreadable or malformed file, or one with no examples.
    """
    path = check_file(path, dataset.task, config)
    readers = {"classification": _classification, "lm": _lm, "seq2seq": _seq2seq, "chat": _chat}
    read = readers[dataset.task]
    split = read(path, dataset, config)
    split.tokenizer = dataset.tokenizer
    return split
