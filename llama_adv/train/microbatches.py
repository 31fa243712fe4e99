"""Gradient accumulation (``train.microbatches``): one optimizer update from a batch run
in several microbatches, each with every pass of the method.

The batch's ``B`` rows become ``count`` microbatches of ``B / count``; microbatch ``j``
holds rows ``j, j + count, j + 2 count, ...``, so that with the batch split over devices
in contiguous blocks every microbatch is spread over all of them (no resharding). A
method's loss is a sum of per-example terms over the step's global denominators
(:attr:`~llama_adv.adversarial.BatchInfo.whole_batch`), so the microbatches' gradients
add up to the whole batch's; its random draws are per example row
(:func:`~llama_adv.adversarial.geometry.example_noise`), so they are the whole batch's too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_adv.errors import UserError


def check_divisible(batch_size: int, count: int, batch_shards: int) -> None:
    """UserError unless ``count`` microbatches split every device's rows evenly."""
    if batch_size % (count * batch_shards):
        raise UserError(
            f"train.batch_size={batch_size} does not split into train.microbatches={count} "
            f"microbatches over the {batch_shards} batch shards (mesh data x fsdp); use a "
            f"batch size that is a multiple of {count * batch_shards}."
        )


def split(batch: dict, count: int) -> tuple[dict, jax.Array]:
    """The microbatches of ``batch`` and the batch rows they hold.

    Args:
      batch: arrays ``[B, ...]``.
      count: microbatches; ``B`` must be a multiple of it.

    Returns:
      ``(microbatches, rows)``: arrays ``[count, B / count, ...]`` (microbatch ``j`` holds
      rows ``j, j + count, ...``) and those rows, ``[count, B / count]`` int32.
    """

    def cut(x):
        x = x.reshape(x.shape[0] // count, count, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    size = next(iter(jax.tree.leaves(batch))).shape[0]
    return jax.tree.map(cut, batch), cut(jnp.arange(size, dtype=jnp.int32))


def combine_metrics(stacked: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """One step's metrics from the microbatches' ``[count]``-stacked ones.

    Loss terms (``loss*``) are each microbatch's share of the batch mean (global
    denominators), so they add up; ``*_max``/``*_min`` take the extreme; anything else
    (norms, rates, radii, constants) is the mean over microbatches, which is the batch's
    when every microbatch has as many real examples.
    """
    out = {}
    for name, values in stacked.items():
        if name.startswith("loss"):
            out[name] = jnp.sum(values, axis=0)
        elif name.endswith("_max"):
            out[name] = jnp.max(values, axis=0)
        elif name.endswith("_min"):
            out[name] = jnp.min(values, axis=0)
        else:
            out[name] = jnp.mean(values, axis=0)
    return out
