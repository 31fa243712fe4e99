"""Data layer: tokenizers, synthetic tasks, real datasets through TFDS, the input pipeline.

``load_dataset(config.data)`` builds the dataset ``config.data.name`` names: a synthetic
task, one of the project's TFDS builders (:mod:`llama_adv.data.builders`), or any other
name, tried as a ``tfds.load`` registry name (:mod:`llama_adv.data.tfds_source`).
"""

from __future__ import annotations

import ml_collections as mlc

from llama_adv.data import synthetic, synthetic_chat
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


@DATASETS.register("synthetic_chat")
def _chat(config: mlc.ConfigDict) -> Dataset:
    return synthetic_chat.chat(
        config.num_train,
        config.num_eval,
        config.max_length,
        config.seed,
        config.harmful_fraction,
        config.chat_refusal,
    )


def _tfds_dataset(config: mlc.ConfigDict) -> Dataset:
    from llama_adv.data.tfds_source import load_tfds_dataset  # imports TensorFlow lazily

    return load_tfds_dataset(config)


for _name in (
    "sst2",
    "imdb",
    "ag_news",
    "multi30k",
    "parallel_text",
    "text_corpus",
    "wikitext2",
    "tiny_shakespeare",
    "alpaca_seed",
    "advbench",
    "chat_file",
):
    DATASETS.register(_name)(_tfds_dataset)


def load_dataset(config: mlc.ConfigDict) -> Dataset:
    """Builds the dataset named by ``config.name`` (the ``data`` section); a name that is
    not registered is tried as a tensorflow-datasets registry name (``glue/sst2``, ...)."""
    if config.name in DATASETS or config.name.startswith("synthetic"):
        return DATASETS.get(config.name, field="data.name")(config)  # lists valid names
    return _tfds_dataset(config)


__all__ = ["DATASETS", "Dataset", "Split", "load_dataset"]
