"""External adversarial test sets: AdvGLUE's JSON layout and plain ``text<TAB>label`` TSV.

Every problem with a file (missing, not UTF-8, not JSON, no such task, a malformed row, no
rows) is a one-line ``UserError`` naming the file; the suite loads the set before any attack
runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llama_adv.errors import UserError

# AdvGLUE fields holding the text of each task; pairs are joined with a space.
ADVGLUE_FIELDS = {
    "sst2": ("sentence",),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "mnli-mm": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
}


def _short(value: Any, width: int = 80) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _label(value: Any, where: str) -> int:
    """An integer label (``1`` or ``"1"``); anything else is an error naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserError(f"{where}: label {_short(value)} is not an integer class id.")
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{where}: label {_short(value)} is not an integer class id.") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"Adversarial set {path} is not UTF-8 text ({error.reason}).") from None
    except OSError as error:
        raise UserError(f"Adversarial set {path} cannot be read: {error.strerror}.") from None


def load_advglue(path: str | Path, task: str) -> tuple[list[str], list[int]]:
    """Reads ``{"sst2": [{"idx": ..., "sentence": ..., "label": ...}, ...], ...}``.

    Returns:
      Texts and integer labels of ``task``, in file order.
    """
    try:
        data = json.loads(_read_text(Path(path)))
    except json.JSONDecodeError as error:
        raise UserError(f"Adversarial set {path} is not valid JSON: {error}.") from None
    if not isinstance(data, dict):
        raise UserError(
            f"Adversarial set {path} must hold a JSON object of tasks (AdvGLUE layout, "
            f'{{"sst2": [{{"sentence": ..., "label": ...}}, ...]}}), got a {type(data).__name__}.'
        )
    if task not in data:
        held = ", ".join(sorted(data)) or "nothing"
        raise UserError(
            f"Adversarial set {path} has no task {task!r} (--adv-task / robustness.adv_task); "
            f"it holds: {held}."
        )
    rows = data[task]
    if not isinstance(rows, list):
        raise UserError(f"{path}: task {task!r} must be a list of rows, got {_short(rows)}.")
    fields = ADVGLUE_FIELDS.get(task, ("sentence",))
    texts, labels = [], []
    for number, row in enumerate(rows):
        where = f"{path}: {task} row {number}"
        if not isinstance(row, dict):
            raise UserError(f"{where} must be an object with {', '.join(fields)}, label.")
        missing = [f for f in (*fields, "label") if f not in row]
        if missing:
            raise UserError(f"{where} lacks {', '.join(missing)}: {_short(row)}.")
        texts.append(" ".join(str(row[f]) for f in fields))
        labels.append(_label(row["label"], where))
    return texts, labels


def load_tsv(path: str | Path) -> tuple[list[str], list[int]]:
    """Reads lines ``text<TAB>label``; a first line whose label is not an integer is a header."""
    texts, labels = [], []
    for number, line in enumerate(_read_text(Path(path)).splitlines(), 1):
        if not line.strip():
            continue
        text, sep, label = line.rpartition("\t")
        if not sep:
            raise UserError(f"{path}:{number}: expected text<TAB>label, got {_short(line)}.")
        try:
            labels.append(int(label))
        except ValueError:
            if number == 1:
                continue
            raise UserError(f"{path}:{number}: label {label!r} is not an integer.") from None
        texts.append(text)
    return texts, labels


def load_adversarial_set(path: str | Path, task: str = "sst2") -> tuple[list[str], list[int]]:
    """AdvGLUE JSON (``.json``, task by name) or TSV (anything else).

    Raises:
      UserError: the file is missing or malformed, or holds no examples.
    """
    if not Path(path).is_file():
        raise UserError(
            f"Adversarial set {path} does not exist (--adv-set / robustness.adv_set: an "
            "AdvGLUE .json or text<TAB>label .tsv file)."
        )
    texts, labels = load_advglue(path, task) if str(path).endswith(".json") else load_tsv(path)
    if not texts:
        raise UserError(f"Adversarial set {path} holds no examples.")
    return texts, labels


def check_labels(path: str | Path, labels: list[int], num_classes: int) -> None:
    """Every label must be a class of the run (``0 .. num_classes - 1``)."""
    for i, label in enumerate(labels):
        if not 0 <= label < num_classes:
            raise UserError(
                f"Adversarial set {path}: example {i} has label {label}, outside this run's "
                f"classes 0..{num_classes - 1}."
            )
