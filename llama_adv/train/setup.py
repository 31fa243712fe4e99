"""Builds a run's pieces from its config, validating names before anything is written."""

from __future__ import annotations

import dataclasses
import math

import jax
import ml_collections as mlc
import numpy as np

from llama_adv.adversarial import Method, build_method, validate_adv_config
from llama_adv.data import Dataset, load_dataset
from llama_adv.errors import UserError
from llama_adv.models import Model, build_model
from llama_adv.models.lora import Lora
from llama_adv.tasks import Task, build_task
from llama_adv.train.mesh import BATCH_AXES, MESH_AXES, mesh_shape


@dataclasses.dataclass
class Experiment:
    """The dataset, task, model and method a config describes."""

    dataset: Dataset
    task: Task
    model: Model
    method: Method
    lora: Lora | None = None  # LoRA adapters (model.lora.rank > 0): base weights frozen


def build_experiment(config: mlc.ConfigDict) -> Experiment:
    """Resolves every registry name in ``config``; raises UserError on any bad value."""
    task = build_task(config.task.name)
    dataset = load_dataset(config.data)
    if dataset.task != config.task.name:
        raise UserError(
            f"Dataset {config.data.name!r} is a {dataset.task} dataset but task.name is "
            f"{config.task.name!r}; set task.name={dataset.task}."
        )
    num_classes = config.task.num_classes or dataset.num_classes
    model = build_model(
        config.model, head=task.head, vocab_size=dataset.vocab_size, num_classes=num_classes
    )
    validate_adv_config(config.adv, model.streams, model.latent_streams)
    devices = config.train.num_devices or jax.device_count()
    if devices > jax.device_count():
        raise UserError(
            f"train.num_devices={devices} but only {jax.device_count()} devices are visible."
        )
    shape = dict(zip(MESH_AXES, mesh_shape(dict(config.mesh), devices), strict=True))
    shards = math.prod(shape[axis] for axis in BATCH_AXES)
    split = f"the {devices} devices" if shards == devices else (
        f"mesh.data x mesh.fsdp = {shape['data']} x {shape['fsdp']}")  # fmt: skip
    for field, size in (("train.batch_size", config.train.batch_size),
                        ("eval.batch_size", config.eval.batch_size)):  # fmt: skip
        if size % shards:
            raise UserError(
                f"{field}={size} is not divisible by {split} (the batch is split over "
                f"data and fsdp); use a multiple of {shards}."
            )
    lora = Lora.from_config(config.model.lora)
    method = build_method(config.adv, task, config.train.num_steps)
    return Experiment(dataset, task, model, method, lora)


def example_batch(dataset: Dataset, split: str, size: int) -> dict[str, np.ndarray]:
    """The first ``size`` examples of ``split``, for shapes and initialisation."""
    return dataset.split(split).take(np.arange(size) % len(dataset.split(split)))
