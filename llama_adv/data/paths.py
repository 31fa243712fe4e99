"""Where data lives: user-placed source files and the prepared-data cache.

- Source files: ``data.manual_dir`` if set, else ``<root>/<dataset folder>`` where
  ``<root>`` is ``data.data_dir`` or the environment variable ``LLAMA_ADV_DATA_DIR``.
  On the project's machines and in CI the root is ``../shared/data`` seen from the
  repository (``LLAMA_ADV_DATA_DIR=../shared/data``). Data is never copied into the repo.
- Cache (prepared TFDS records, trained tokenizers, encoded arrays): ``data.cache_dir``,
  else ``LLAMA_ADV_CACHE_DIR``, else ``~/.cache/llama_adv``.
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_collections as mlc

from llama_adv.errors import UserError

DATA_ENV = "LLAMA_ADV_DATA_DIR"
CACHE_ENV = "LLAMA_ADV_CACHE_DIR"
DEFAULT_CACHE = "~/.cache/llama_adv"


def data_root(config: mlc.ConfigDict) -> Path | None:
    """The root of user-placed files, or None when neither field nor variable is set."""
    root = config.data_dir or os.environ.get(DATA_ENV, "")
    return Path(root).expanduser() if root else None


def source_dir(config: mlc.ConfigDict, folder: str, how_to_obtain: str) -> Path:
    """The folder holding this dataset's files; raises UserError if it is missing."""
    if config.manual_dir:
        path = Path(config.manual_dir).expanduser()
    else:
        root = data_root(config)
        if root is None or not folder:
            needs = f"<root>/{folder}" if folder else "its files"
            raise UserError(
                f"Dataset {config.name!r} reads {needs} from disk, but no location is set: "
                f"set data.data_dir or ${DATA_ENV} to the root folder (on the project's "
                f"machines: {DATA_ENV}=../shared/data), or data.manual_dir to the "
                f"dataset's own folder. {how_to_obtain}"
            )
        path = root / folder
    if not path.is_dir():
        raise UserError(f"Missing data folder {path} for dataset {config.name!r}. {how_to_obtain}")
    return path


def cache_root(config: mlc.ConfigDict | None = None) -> Path:
    """The cache folder (created): ``config.cache_dir`` (data settings), else
    ``$LLAMA_ADV_CACHE_DIR``, else ``~/.cache/llama_adv``."""
    chosen = config.cache_dir if config is not None else ""
    root = chosen or os.environ.get(CACHE_ENV, "") or DEFAULT_CACHE
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
