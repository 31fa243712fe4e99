"""Data layer: tokenizers, synthetic tasks, datasets and the input pipeline."""

from __future__ import annotations

import ml_collections as mlc

from llama_adv.data import synthetic
from llama_adv.data.base import Dataset, Split
from llama_adv.registry import Registry

DATASETS: Registry = Registry("dataset")


@DATASETS.register("synthetic_sentiment")
def _sentiment(config: mlc.ConfigDict) -> Dataset:
    return synthetic.sentiment(config.num_train, config.num_eval, config.max_length, config.seed)


@DATASETS.register("synthetic_lm")
def _lm(config: mlc.ConfigDict) -> Dataset:
    return synthetic.language_model(
        config.num_train, config.num_eval, config.max_length, config.seed
    )


@DATASETS.register("synthetic_reverse")
def _reverse(config: mlc.ConfigDict) -> Dataset:
    return synthetic.reverse(config.num_train, config.num_eval, config.max_length, config.seed)


def load_dataset(config: mlc.ConfigDict) -> Dataset:
    """Builds the dataset named by ``config.name`` (the ``data`` section)."""
    return DATASETS.get(config.name, field="data.name")(config)


__all__ = ["DATASETS", "Dataset", "Split", "load_dataset"]
