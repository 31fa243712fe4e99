"""Helpers shared by the adversarial tests."""

import jax.numpy as jnp

from llama_adv.adversarial import BatchInfo
from llama_adv.train.step import make_objective


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
    )
    return make_objective(model, task, batch, masks), info
