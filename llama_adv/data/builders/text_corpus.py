"""A plain-text corpus for language modelling: one file per split, one example per line.

Each example is one line *with* its newline, so that concatenating the examples in order
(what LM packing does) restores the file exactly. The split -> file name mapping is a
config option (tiny_shakespeare: ``train=input.txt``; WikiText-2 here:
``validation=valid.txt,test=test.txt``).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from llama_adv.data.builders.base import ProjectBuilder, decoded_lines, non_empty, require

HOW = "Place the corpus files in data.manual_dir (or data.data_dir/<dataset folder>)."


class LlamaAdvTextCorpus(ProjectBuilder):
    """Options: ``splits`` {split: file name}."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        files = self.builder_config.option("splits")
        paths = {split: require(root / name, HOW) for split, name in files.items()}
        return {split: self._generate(split, path) for split, path in paths.items()}

    def _generate(self, split: str, path: Path):
        count = 0
        for number, line in decoded_lines(path, self.checker):
            count += 1
            yield number, {"text": line + "\n"}
        non_empty(split, count, path)
        self._record_skipped()
