"""External adversarial test sets: AdvGLUE's JSON layout and plain ``text<TAB>label`` TSV."""

from __future__ import annotations

import json
from pathlib import Path

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


def load_advglue(path: str | Path, task: str) -> tuple[list[str], list[int]]:
    """Reads ``{"sst2": [{"idx": ..., "sentence": ..., "label": ...}, ...], ...}``.

    Returns:
      Texts and integer labels of ``task``, in file order.
    """
    data = json.loads(Path(path).read_text())
    if task not in data:
        raise UserError(f"{path} has no task {task!r}; it holds: {', '.join(sorted(data))}.")
    fields = ADVGLUE_FIELDS.get(task, ("sentence",))
    texts, labels = [], []
    for row in data[task]:
        missing = [f for f in fields if f not in row]
        if missing or "label" not in row:
            raise UserError(f"{path}: a {task} row lacks {missing or ['label']}: {row}.")
        texts.append(" ".join(str(row[f]) for f in fields))
        labels.append(int(row["label"]))
    return texts, labels


def load_tsv(path: str | Path) -> tuple[list[str], list[int]]:
    """Reads lines ``text<TAB>label``; a first line whose label is not an integer is a header."""
    texts, labels = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        text, sep, label = line.rpartition("\t")
        if not sep:
            raise UserError(f"{path}:{number}: expected text<TAB>label.")
        try:
            labels.append(int(label))
        except ValueError:
            if number == 1:
                continue
            raise UserError(f"{path}:{number}: label {label!r} is not an integer.") from None
        texts.append(text)
    return texts, labels


def load_adversarial_set(path: str | Path, task: str = "sst2") -> tuple[list[str], list[int]]:
    """AdvGLUE JSON (``.json``, task by name) or TSV (anything else)."""
    if not Path(path).is_file():
        raise UserError(f"Adversarial set {path} does not exist.")
    return load_advglue(path, task) if str(path).endswith(".json") else load_tsv(path)
