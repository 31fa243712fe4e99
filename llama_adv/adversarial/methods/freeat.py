"""``freeat`` ("free" adversarial training, Shafahi et al. 2019): each batch is replayed
``m = adv.freeat.replays`` times; each replay's one forward/backward at ``x + delta`` gives
the parameter gradient (one optimizer step per replay) and the gradient that moves
``delta`` by one ascent step of size ``adv.step_size`` (default: the radius). ``delta``
warm-starts across the replays; with ``init_state(..., batch_shapes=...)`` it is also kept
in the method state and carried to the next batch, as in the paper.

``m`` optimizer steps per batch: the learning-rate schedule spans ``m * train.num_steps``
updates (warm-up counted in updates too); divide ``train.num_steps`` by ``m`` to keep the
epoch budget, as the paper does. Passes: m forward, m backward.

Dropout: ``fresh`` by default: each replay is its own train-mode forward (Shafahi et
al.'s code); ``eval`` is refused (every pass enters the loss).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from llama_adv.adversarial import ascent
from llama_adv.adversarial.base import BatchInfo, Method, fail


class FreeAT(Method):
    attack_pass = False  # each replay's one pass is both the attack and the loss
    # the loss is each replay's L(x + delta); adv.divergence names the loss_div metric's
    uses = frozenset({"step_size", "norm", "scope", "linf_step", "projection", "divergence"})
    unused_reason = " (each replay's loss is L(x + delta), its ascent one step)"
    microbatch_refusal = (
        "each of its adv.freeat.replays is an optimizer update whose perturbation the next "
        "replay carries on, so microbatches cannot share one update"
    )
    defaults: ClassVar[dict[str, Any]] = {
        "norm": "l2",
        "weight_clean": 0.0,
        "weight_adv": 1.0,
        "weight_div": 0.0,
    }

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        self.replays = int(config.freeat.replays)
        self.updates_per_batch = self.replays
        self.passes = (self.replays, self.replays)
        self.cost = (self.replays, 0, self.replays)

    @classmethod
    def validate(cls, config):
        super().validate(config)
        if config.freeat.replays < 1:
            raise fail("freeat.replays", f"must be >= 1, got {config.freeat.replays}.")

    def init_state(self, params, num_examples: int, batch_shapes: dict | None = None):
        """``{"delta": {stream: zeros (global B, max L, D)}}``, the carried perturbation;
        ``{}`` without ``batch_shapes`` or with ``adv.freeat.carry`` off."""
        if not batch_shapes or not self.config.freeat.get("carry", True):
            return {}
        return {"delta": {k: jnp.zeros(s, jnp.float32) for k, s in batch_shapes.items()}}

    def step_size(self, radius, info):
        """``adv.step_size`` (times the radius unit), or the radius."""
        if self.opt.step_size > 0:
            return jnp.asarray(self.opt.step_size, jnp.float32) * self.unit(info)
        return jnp.asarray(radius, jnp.float32)

    def _local(self, state, info: BatchInfo):
        """This device's rows of the carried global perturbation (zeros if none)."""
        if "delta" not in state:
            return info.zeros()
        index = jax.lax.axis_index(info.axis_name) if info.axis_name else 0
        local = {}
        for k, v in state["delta"].items():
            rows, length = info.shapes[k][:2]
            local[k] = jax.lax.dynamic_slice_in_dim(v, index * rows, rows)[:, :length]
        return local

    def update(self, objective, params, opt_state, info: BatchInfo, rng, state, descend):
        o, masks = self.opt, self.masks(info)
        radius = self.radius(info)
        step_size = self.step_size(radius, info)
        delta0 = {k: v * masks[k][..., None] for k, v in self._local(state, info).items()}

        def loss_fn(p, delta, t):
            per_example, outputs = objective(p, delta, self.rng_at(rng, t))
            return info.local_mean(per_example), outputs

        def replay(carry, t):
            params, opt_state, delta, _ = carry
            (loss, out), (g_params, g_delta) = jax.value_and_grad(
                loss_fn, argnums=(0, 1), has_aux=True
            )(params, delta, t)
            params, opt_state, grad_norm = descend(params, opt_state, g_params)
            new = ascent.step(delta, g_delta, masks, o, step_size, radius)
            return (params, opt_state, new, delta), (loss, grad_norm, out)

        (params, opt_state, carried, last_delta), (losses, norms, outs) = jax.lax.scan(
            replay, (params, opt_state, delta0, delta0), jnp.arange(self.replays)
        )
        first = jax.tree.map(lambda x: x[0], outs)  # replay 0 ran at delta0
        last = jax.tree.map(lambda x: x[-1], outs)
        terms = {
            "clean": losses[0],  # clean only when delta0 is zero (no carried state)
            "adv": jnp.mean(losses),
            "div": info.local_div_mean(self.divergence(first, last, info, o.divergence)),
        }
        metrics = self.metrics(info, terms, last_delta, first, last)
        metrics["loss"] = info.psum(terms["adv"])
        metrics["grad_norm"] = norms[-1]
        if "delta" in state:
            gathered = {
                k: jax.lax.all_gather(v, info.axis_name, tiled=True) if info.axis_name else v
                for k, v in carried.items()
            }
            state = {
                "delta": {k: v.at[:, : gathered[k].shape[1]].set(gathered[k])
                          for k, v in state["delta"].items()}
            }  # fmt: skip
        return params, opt_state, metrics, state
