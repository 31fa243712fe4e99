"""AG News topic classification (4 classes, in the order of ``classes.txt``).

Files in the source folder:

- ``train.csv`` / ``test.csv``: the official CSV, rows ``"class","title","description"``,
  class 1..4, no header. The text is ``title + " " + description``.
- ``train_subset10k.tsv`` (the variant in shared/data): rows ``text\\tclass-name``, no
  header; used for ``train`` when ``train.csv`` is absent.
- ``classes.txt`` (optional): one class name per line; default World, Sports, Business,
  Sci/Tech.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import tensorflow_datasets as tfds

from llama_adv.data.builders.base import ProjectBuilder, decoded_lines, non_empty, require

HOW = (
    "Download AG News (Zhang et al. 2015; ag_news_csv.tgz with train.csv, test.csv and "
    "classes.txt) and point data.manual_dir (or data.data_dir/ag_news) at the folder."
)
DEFAULT_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
TRAIN_FILES = ("train.csv", "train_subset10k.tsv")


def read_classes(root: Path) -> tuple[str, ...]:
    path = root / "classes.txt"
    if not path.exists():
        return DEFAULT_CLASSES
    names = tuple(line.strip() for line in path.read_text("utf-8").splitlines() if line.strip())
    return names or DEFAULT_CLASSES


class LlamaAdvAgNews(ProjectBuilder):
    """AG News from the official CSV files or the ``text\\tclass`` TSV variant."""

    def _info(self) -> tfds.core.DatasetInfo:
        classes = self.builder_config.option("classes", list(DEFAULT_CLASSES))
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=classes)}
            ),
            supervised_keys=("text", "label"),
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        train = next((root / n for n in TRAIN_FILES if (root / n).exists()), None)
        if train is None:
            require(root / TRAIN_FILES[0], HOW)
        test = require(root / "test.csv", HOW)
        return {"train": self._generate("train", train), "test": self._generate("test", test)}

    def _generate(self, split: str, path: Path):
        names = self.info.features["label"].names
        check, count = self.checker, 0
        for number, line in decoded_lines(path, check):
            if path.suffix == ".tsv":
                cells = line.split("\t")
                if len(cells) != 2:
                    check.bad(
                        path,
                        number,
                        f"expected 2 tab-separated columns (text, class name), got {len(cells)}",
                    )
                    continue
                text, name = cells[0].strip(), cells[1].strip()
                if name not in names:
                    check.bad(path, number, f"class {name!r} is outside the class set {names}")
                    continue
                label = names.index(name)
            else:
                try:
                    cells = next(csv.reader(io.StringIO(line)))
                except (csv.Error, StopIteration) as e:
                    check.bad(path, number, f"unreadable CSV row ({e})")
                    continue
                if len(cells) != 3:
                    check.bad(
                        path,
                        number,
                        f"expected 3 CSV columns (class, title, description), got {len(cells)}",
                    )
                    continue
                klass = cells[0].strip()
                if not klass.isdigit() or not 1 <= int(klass) <= len(names):
                    check.bad(
                        path, number, f"class {klass!r} is outside the class set 1..{len(names)}"
                    )
                    continue
                text, label = f"{cells[1].strip()} {cells[2].strip()}", int(klass) - 1
            count += 1
            yield number, {"text": text, "label": label}
        non_empty(split, count, path)
        self._record_skipped()
