"""Chat (prompt, response) files: Alpaca-style JSON / JSON lines and AdvBench-style CSV.

Features: ``prompt``, ``response``, ``away`` (a harmful target a safe model must not
produce; ``""``: none) and ``harmful`` (0/1). The file format follows the extension:

- ``.jsonl`` (one object per line) or ``.json`` (an array of objects, or JSON lines):
  ``instruction`` (or ``prompt``), optional ``input`` (appended to the instruction after a
  blank line), ``output`` (or ``response``); optional ``harmful`` (bool or 0/1) and
  ``away``. A record may instead nest its examples as ``instances: [{input, output},
  ...]`` under one ``instruction`` (the Self-Instruct seed tasks): one example each.
- ``.csv`` with a header holding ``goal`` and ``target`` (AdvBench): prompt = goal,
  response = target, harmful = 1 (or the value of a ``harmful`` column).

The split -> file mapping is a config option (``data.split_files``). A missing or empty
field is a malformed row: an error naming the file, line and field (or, with
``data.skip_malformed``, skipped and counted); a CSV without the ``goal``/``target``
columns is always an error.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from llama_adv.data.builders.base import (
    ProjectBuilder,
    RowChecker,
    decoded_lines,
    non_empty,
    require,
)
from llama_adv.errors import UserError

HOW = (
    "Place chat files (.jsonl/.json with instruction, input, output; or .csv with goal, "
    "target) in data.manual_dir and name them with data.split_files "
    '(e.g. "train=train.jsonl,validation=val.jsonl").'
)
HOW_ALPACA = (
    "Place seed_tasks.jsonl of the Self-Instruct seed tasks "
    "(https://github.com/yizhongw/self-instruct, data/seed_tasks.jsonl) in data.manual_dir "
    "(or data.data_dir/alpaca_seed)."
)
HOW_ADVBENCH = (
    "Place harmful_behaviors.csv of AdvBench (https://github.com/llm-attacks/llm-attacks, "
    "data/advbench) in data.manual_dir (or data.data_dir/advbench)."
)
PROMPT_KEYS = ("instruction", "prompt")
RESPONSE_KEYS = ("output", "response")
CSV_COLUMNS = ("goal", "target")

Example = dict[str, Any]


def _flag(value: Any) -> int | None:
    """A ``harmful`` value as 0/1, or None when it is not a boolean."""
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return int(value.strip().lower() in ("1", "true"))
    return None


def _text(record: dict, keys: tuple[str, ...], where: str, optional: bool = False):
    """``(value, error)``: the first of ``keys`` in ``record`` as a string."""
    key = next((k for k in keys if k in record), None)
    if key is None:
        if optional:
            return "", None
        also = f" (or {', '.join(repr(k) for k in keys[1:])})" if len(keys) > 1 else ""
        return None, f"missing field {keys[0]!r}{also}{where}"
    value = record[key]
    if not isinstance(value, str):
        return None, f"field {key!r}{where} is a {type(value).__name__}, not a string"
    if not optional and not value.strip():
        return None, f"field {key!r}{where} is empty"
    return value, None


def record_examples(record: Any) -> tuple[list[Example], str | None]:
    """The examples of one JSON record, or ``([], reason)`` when it is malformed."""
    if not isinstance(record, dict):
        return [], f"expected a JSON object, got a {type(record).__name__}"
    instruction, error = _text(record, PROMPT_KEYS, "")
    if error:
        return [], error
    harmful = _flag(record.get("harmful", 0))
    if harmful is None:
        return [], f"field 'harmful' must be true/false or 0/1, got {record['harmful']!r}"
    parts = record.get("instances", [record])
    if "instances" in record and (not isinstance(parts, list) or not parts):
        return [], "field 'instances' must be a non-empty list of {input, output} objects"
    out = []
    for i, part in enumerate(parts):
        where = f" in instances[{i}]" if "instances" in record else ""
        if not isinstance(part, dict):
            return [], f"instances[{i}] is not an object"
        extra, error = _text(part, ("input",), where, optional=True)
        response, error2 = _text(part, RESPONSE_KEYS, where)
        away, error3 = _text(part, ("away",), where, optional=True)
        if error or error2 or error3:
            return [], error or error2 or error3
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        out.append({"prompt": prompt, "response": response, "away": away, "harmful": harmful})
    return out, None


def _json_array(text: str) -> Iterator[tuple[int, Any]]:
    """``(line, value)`` of each element of a top-level JSON array (line 1-based)."""
    decoder = json.JSONDecoder()
    index = text.index("[") + 1
    while True:
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
        if index >= len(text) or text[index] == "]":
            return
        line = text.count("\n", 0, index) + 1
        value, index = decoder.raw_decode(text, index)
        yield line, value


def read_json(path: Path, checker: RowChecker) -> Iterator[tuple[str, Example]]:
    """``(key, example)`` of an Alpaca-style ``.json`` array or JSON-lines file."""
    head = path.read_bytes()[:4096].lstrip()
    if path.suffix == ".json" and head.startswith(b"["):
        try:
            records = list(_json_array(path.read_text("utf-8")))
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{path} is not a valid JSON array ({e}).") from None
    else:
        records = []
        for number, line in decoded_lines(path, checker):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except ValueError as e:
                checker.bad(path, number, f"not valid JSON ({e})")
    for number, record in records:
        examples, error = record_examples(record)
        if error:
            checker.bad(path, number, error)
            continue
        for i, example in enumerate(examples):
            yield f"{number}-{i}", example


def read_csv(path: Path, checker: RowChecker) -> Iterator[tuple[str, Example]]:
    """``(key, example)`` of an AdvBench-style CSV (header with ``goal`` and ``target``)."""
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: bytes are not valid UTF-8 ({e.reason}).") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise UserError(
            f"{path}: the CSV header has no {' or '.join(repr(c) for c in missing)} column "
            f"(got {header}); an AdvBench-style file needs a header row with goal,target."
        )
    goal, target = header.index("goal"), header.index("target")
    flag = header.index("harmful") if "harmful" in header else None
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            checker.bad(path, reader.line_num, f"unreadable CSV row ({e})")
            continue
        number = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            checker.bad(path, number, f"expected {len(header)} CSV columns, got {len(cells)}")
            continue
        columns = (("goal", goal), ("target", target))
        empty = next((name for name, i in columns if not cells[i].strip()), "")
        if empty:
            checker.bad(path, number, f"field {empty!r} is empty")
            continue
        harmful = 1 if flag is None else _flag(cells[flag])
        if harmful is None:
            checker.bad(path, number, f"field 'harmful' must be 0/1, got {cells[flag]!r}")
            continue
        example = {"prompt": cells[goal], "response": cells[target], "away": ""}
        yield str(number), {**example, "harmful": harmful}


def read_chat_file(path: Path, checker: RowChecker) -> Iterator[tuple[str, Example]]:
    """The examples of one chat file, by its extension (see the module docstring)."""
    if path.suffix == ".csv":
        return read_csv(path, checker)
    if path.suffix in (".json", ".jsonl"):
        return read_json(path, checker)
    raise UserError(f"{path}: a chat file must end in .jsonl, .json or .csv.")


class LlamaAdvChat(ProjectBuilder):
    """Options: ``splits`` {split: file name}."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "prompt": tfds.features.Text(),
                    "response": tfds.features.Text(),
                    "away": tfds.features.Text(),
                    "harmful": tfds.features.Scalar(dtype=np.int32),
                }
            ),
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        files = self.builder_config.option("splits")
        paths = {split: require(root / name, HOW) for split, name in files.items()}
        return {split: self._generate(split, path) for split, path in paths.items()}

    def _generate(self, split: str, path: Path):
        count = 0
        for key, example in read_chat_file(path, self.checker):
            count += 1
            yield key, example
        non_empty(split, count, path)
        self._record_skipped()
