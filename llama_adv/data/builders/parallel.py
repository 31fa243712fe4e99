"""Line-aligned parallel text for any language pair (the Multi30k layout).

Files ``<stem>.<lang>``, one sentence per line, line ``i`` of the source file translating
line ``i`` of the target file. The split -> stem mapping is a config option (Multi30k:
``train``, ``val``, ``test_2016_flickr``). Features are named by the language codes.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from llama_adv.data.builders.base import ProjectBuilder, decoded_lines, non_empty, require
from llama_adv.errors import UserError

HOW = (
    "Place line-aligned files <stem>.<language> (for Multi30k task 1: train.en, train.de, "
    "val.en, val.de, test_2016_flickr.en, test_2016_flickr.de from "
    "https://github.com/multi30k/dataset) in data.manual_dir (or data.data_dir/multi30k)."
)


class LlamaAdvParallelText(ProjectBuilder):
    """Options: ``languages`` [source, target]; ``splits`` {split: file stem}."""

    def _info(self) -> tfds.core.DatasetInfo:
        src, tgt = self.builder_config.option("languages")
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {src: tfds.features.Text(), tgt: tfds.features.Text()}
            ),
            supervised_keys=(src, tgt),
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        langs = self.builder_config.option("languages")
        splits = self.builder_config.option("splits")
        paths = {
            s: [require(root / f"{stem}.{lang}", HOW) for lang in langs]
            for s, stem in splits.items()
        }
        return {split: self._generate(split, *pair) for split, pair in paths.items()}

    def _generate(self, split: str, src_path: Path, tgt_path: Path):
        src, tgt = self.builder_config.option("languages")
        check, count = self.checker, 0
        src_lines = dict(decoded_lines(src_path, check))
        tgt_lines = dict(decoded_lines(tgt_path, check))
        n_src, n_tgt = _line_count(src_path), _line_count(tgt_path)
        if n_src != n_tgt:
            raise UserError(
                f"{src_path} has {n_src} lines but {tgt_path} has {n_tgt}; parallel files "
                "must be line-aligned."
            )
        for number in range(1, n_src + 1):
            if number not in src_lines or number not in tgt_lines:
                continue  # undecodable on one side, already reported
            s, t = src_lines[number].strip(), tgt_lines[number].strip()
            if not s or not t:
                where = src_path if not s else tgt_path
                check.bad(where, number, "empty sentence in a parallel pair")
                continue
            count += 1
            yield number, {src: s, tgt: t}
        non_empty(split, count, src_path)
        self._record_skipped()


def _line_count(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)
