"""Optimizer and learning-rate schedule from the ``optim`` config section (optax)."""

from __future__ import annotations

import ml_collections as mlc
import optax

from llama_adv.errors import UserError

SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "sgd")


def make_schedule(config: mlc.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to the peak, then cosine, linear or constant."""
    peak, warmup = config.learning_rate, min(config.warmup_steps, num_steps)
    end = peak * config.end_learning_rate_factor
    decay_steps = max(num_steps - warmup, 1)
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(
            peak, decay_steps, alpha=config.end_learning_rate_factor
        )
    elif config.schedule == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif config.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise UserError(f"optim.schedule must be one of {SCHEDULES}, got {config.schedule!r}.")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(
    config: mlc.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """AdamW or SGD with optional global-norm clipping."""
    if config.name == "adamw":
        opt = optax.adamw(
            schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay
        )
    elif config.name == "sgd":
        opt = optax.sgd(schedule, momentum=config.momentum or None)
    else:
        raise UserError(f"optim.name must be one of {OPTIMIZERS}, got {config.name!r}.")
    if config.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
    return opt
