"""SST-2 in GLUE's TSV format: ``train.tsv`` and ``dev.tsv`` with header ``sentence\\tlabel``.

Splits: ``train`` (67,349 in GLUE) and ``validation`` (``dev.tsv``, 872). GLUE's
``test.tsv`` has no labels and is ignored. Labels: 0 negative, 1 positive.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from llama_adv.data.builders.base import ProjectBuilder, non_empty, require

HOW = (
    "Download SST-2 from the GLUE benchmark (https://gluebenchmark.com/tasks, file "
    "SST-2.zip), unzip it and point data.manual_dir (or data.data_dir/sst2) at the folder "
    "holding train.tsv and dev.tsv."
)
FILES = {"train": "train.tsv", "validation": "dev.tsv"}
CLASSES = ("negative", "positive")


class LlamaAdvSst2(ProjectBuilder):
    """SST-2 (binary sentiment) from GLUE's TSV files."""

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
        paths = {split: require(root / name, HOW) for split, name in FILES.items()}
        return {split: self._generate(split, path) for split, path in paths.items()}

    def _generate(self, split: str, path: Path):
        check = self.checker
        count = 0
        with open(path, "rb") as f:
            header = f.readline().decode("utf-8", "replace").rstrip("\r\n").split("\t")
            if "sentence" not in header or "label" not in header:
                check.skip = False  # a wrong header is never a row to skip
                check.bad(
                    path, 1, f"expected a header with columns sentence and label, got {header!r}"
                )
            text_col, label_col = header.index("sentence"), header.index("label")
            for number, raw in enumerate(f, start=2):
                try:
                    cells = raw.decode("utf-8").rstrip("\r\n").split("\t")
                except UnicodeDecodeError as e:
                    check.bad(path, number, f"bytes are not valid UTF-8 ({e.reason})")
                    continue
                if len(cells) != len(header):
                    check.bad(
                        path,
                        number,
                        f"expected {len(header)} tab-separated columns, got {len(cells)}",
                    )
                    continue
                label = cells[label_col].strip()
                if label not in ("0", "1"):
                    check.bad(path, number, f"label {label!r} is outside the class set {{0, 1}}")
                    continue
                count += 1
                yield number, {"text": cells[text_col].strip(), "label": int(label)}
        non_empty(split, count, path)
        self._record_skipped()
