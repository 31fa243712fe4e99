"""Helpers shared by the adversarial tests."""

import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.adversarial import BatchInfo
from llama_adv.config import get_default_config
from llama_adv.data import load_dataset
from llama_adv.models import build_model
from llama_adv.tasks import build_task
from llama_adv.train.step import make_objective


def tiny_seq2seq():
    """``(config, task, model, batch, params)``: a 1-block, 32-wide encoder-decoder on 8
    examples of the synthetic reverse task (two embedding streams)."""
    config = get_default_config()
    config.data.name, config.data.num_train, config.data.num_eval = "synthetic_reverse", 16, 8
    config.data.max_length = 8
    config.model.name, config.model.d_model, config.model.num_layers = "encoder_decoder", 32, 1
    config.model.num_heads, config.model.d_ff = 2, 32
    dataset = load_dataset(config.data)
    task = build_task("seq2seq")
    model = build_model(config.model, head="lm", vocab_size=dataset.vocab_size, num_classes=0)
    batch = {k: jnp.asarray(v) for k, v in dataset.split("train").take(np.arange(8)).items()}
    return config, task, model, batch, model.init(jax.random.key(0), batch)


def single_device_setup(model, task, params, batch, step: int = 0, perturb_special: bool = False):
    """``(objective, info)`` as the train step builds them, for one device (no collective)."""
    masks = model.perturbable_mask(batch, perturb_special=perturb_special)
    masks = {k: m.astype(jnp.float32) for k, m in masks.items()}
    info = BatchInfo(
        masks=masks,
        shapes={k: v.shape for k, v in model.embed(params, batch).items()},
        batch=batch,
        denominator=jnp.sum(task.denominator(batch)),
        step=jnp.asarray(step, jnp.int32),
        axis_name=None,
        tokens=model.stream_tokens(batch),
        embedding_rms=model.embedding_rms(params),
        embedding_norm=model.embedding_norm(params),
    )
    return make_objective(model, task, batch, masks), info
