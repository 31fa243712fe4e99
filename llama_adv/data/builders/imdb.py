"""IMDB Large Movie Review Dataset v1.0 (Maas et al. 2011) from its ``aclImdb/`` layout.

The source folder holds either the extracted ``aclImdb/`` folder or ``aclImdb.tar.gz``
(read as a stream, never extracted). Splits: ``train`` (25,000: ``train/{pos,neg}``),
``test`` (25,000) and ``unsup`` (50,000 unlabelled reviews, ``train/unsup``) whose label
is -1, as in TFDS's ``imdb_reviews``. Labels: 0 negative, 1 positive. The ``<br />``
tags are kept (the text is the file's content), as in the original data.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import tensorflow_datasets as tfds

from llama_adv.data.builders.base import ProjectBuilder, non_empty
from llama_adv.errors import UserError

HOW = (
    "Download aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/ and "
    "place it (renamed aclImdb.tar.gz) or its extracted aclImdb/ folder in data.manual_dir "
    "(or data.data_dir/imdb)."
)
CLASSES = ("neg", "pos")
SPLIT_DIRS = {
    "train": ("train", ("neg", "pos")),
    "test": ("test", ("neg", "pos")),
    "unsup": ("train", ("unsup",)),
}


def _folder_members(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*.txt")):
        yield path.relative_to(root.parent).as_posix(), path.read_bytes()


def _archive_members(archive: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".txt"):
                yield member.name, tar.extractfile(member).read()


class LlamaAdvImdb(ProjectBuilder):
    """IMDB reviews with the unlabelled ``unsup`` split (label -1)."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=CLASSES)}
            ),
            supervised_keys=("text", "label"),
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        folder, archive = root / "aclImdb", root / "aclImdb.tar.gz"
        if folder.is_dir():
            source, members = folder, lambda: _folder_members(folder)
        elif archive.exists():
            source, members = archive, lambda: _archive_members(archive)
        else:
            raise UserError(f"Missing data: neither {folder} nor {archive} exists. {HOW}")
        return {split: self._generate(split, source, members) for split in SPLIT_DIRS}

    def _generate(self, split: str, source: Path, members):
        top, classes = SPLIT_DIRS[split]
        check, count = self.checker, 0
        for name, data in members():
            parts = name.split("/")  # aclImdb/<top>/<class>/<id>_<rating>.txt
            if len(parts) != 4 or parts[1] != top or parts[2] not in classes:
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                check.bad(f"{source}:{name}", 1, f"bytes are not valid UTF-8 ({e.reason})")
                continue
            label = -1 if parts[2] == "unsup" else CLASSES.index(parts[2])
            count += 1
            yield name, {"text": text, "label": label}
        non_empty(split, count, source)
        self._record_skipped()
