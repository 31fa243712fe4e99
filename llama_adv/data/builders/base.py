"""Shared pieces of the project's TFDS builders: configs, file checks, row errors.

Every project builder reads files a user placed in one folder (TFDS's ``manual_dir``) and
is configured by a :class:`SourceConfig`, whose name carries a hash of its options and of
the source files' sizes and modification times: changing either prepares a fresh copy
instead of silently reusing a stale one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from llama_adv.errors import UserError

VERSION = tfds.core.Version("1.0.0")


@dataclasses.dataclass(eq=False)
class SourceConfig(tfds.core.BuilderConfig):
    """A builder config whose ``options`` (JSON-able dict) select files and parsing."""

    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


def make_config(label: str, options: dict[str, Any], source: Path) -> SourceConfig:
    """A config named ``<label>-<hash of options and source file stats>``."""
    stats = []
    if source.is_dir():
        for entry in sorted(source.iterdir()):
            st = entry.stat()
            stats.append((entry.name, st.st_size, st.st_mtime_ns))
    key = json.dumps([options, str(source.resolve()), stats], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return SourceConfig(name=f"{label}-{digest}", version=VERSION, options=options)


def require(path: Path, how_to_obtain: str) -> Path:
    """Returns ``path`` or raises UserError naming it and how to get the data."""
    if not path.exists():
        raise UserError(f"Missing data file {path}. {how_to_obtain}")
    return path


class RowChecker:
    """Raises UserError naming file and line for a malformed row, or counts it.

    With ``skip=True`` malformed rows are dropped and counted per file; the counts end up
    in the prepared dataset's metadata (``skipped_rows``) and are printed when loading.
    """

    def __init__(self, skip: bool):
        self.skip = skip
        self.skipped: dict[str, int] = {}

    def bad(self, path: Path | str, line: int, message: str) -> None:
        if not self.skip:
            raise UserError(
                f"{path}, line {line}: {message}. Fix the row, or set "
                "data.skip_malformed=True to skip malformed rows (they are counted)."
            )
        self.skipped[str(path)] = self.skipped.get(str(path), 0) + 1


def decoded_lines(path: Path, checker: RowChecker) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` of a UTF-8 file without line terminators; undecodable
    lines are reported through ``checker`` (1-based line numbers)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                checker.bad(
                    path, number, f"bytes are not valid UTF-8 ({e.reason} at byte {e.start})"
                )
                continue
            yield number, text.rstrip("\r\n")


def non_empty(split: str, count: int, where: Path | str) -> None:
    """Raises UserError when a split produced no examples."""
    if count == 0:
        raise UserError(
            f"The {split!r} split read from {where} is empty (no valid rows). Check the file, "
            "or that data.skip_malformed did not drop every row."
        )


class ProjectBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the project's builders: a ``SourceConfig`` and skipped-row bookkeeping."""

    VERSION = VERSION
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the files in data.manual_dir (see the builder docs)."

    @property
    def checker(self) -> RowChecker:
        if not hasattr(self, "_checker"):
            self._checker = RowChecker(bool(self.builder_config.option("skip_malformed")))
        return self._checker

    def _record_skipped(self) -> None:
        # Written with dataset_info.json after generation, so later loads can report it.
        self.info.metadata["skipped_rows"] = dict(self.checker.skipped)

    def _generate_examples(self, **kwargs):
        # Unused: each builder's _split_generators returns its split generators directly.
        raise NotImplementedError

    def _metadata(self) -> tfds.core.MetadataDict:
        return tfds.core.MetadataDict(skipped_rows={})
