"""``freelb`` (Zhu et al. 2020): ``(1/K) sum_t L(x + delta_t)`` with the parameter gradient
accumulated over all ``K`` ascent iterates and one optimizer step.

Each iterate's single backward gives both its parameter gradient and the gradient that
moves ``delta``; ``delta_0`` is FreeLB's uniform init (``init_mag 0`` makes it clean), not
projected before the first forward (the reference projects only after each ascent step).
Defaults follow the RoBERTa launch scripts: K 2, adv_lr 0.1 (``adv.step_size``), init_mag
0.5 (``adv.init_magnitude``), max_norm ``adv.epsilon`` (``adv.unbounded`` for 0). Under
L-inf the step is ``g / ||g||_inf`` per example (``adv.linf_step = max_norm``), as
FreeLB's L-inf code normalises it; ``sign`` is the alternative. The same
dropout key serves every pass of the update by default (``adv.dropout = shared``): the
reference code (zhuchen03/FreeLB) reuses one dropout mask across the ascent iterates.
``eval`` is refused: every iterate's one pass is both the attack and the loss.
Passes: K forward and K backward, plus one clean forward for the flip-rate metric.
The launch scripts' radii (max_norm 0.4..0.7, adv_lr 0.1) are absolute, on RoBERTa/ALBERT
embedding tables; under ``adv.radius_unit = embedding_rms`` both are read in units of the
table's RMS row norm instead (``init_mag`` stays absolute).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from llama_adv.adversarial import ascent
from llama_adv.adversarial.base import NOISE_STREAM, BatchInfo, Method


class FreeLB(Method):
    iterative = True
    attack_pass = False  # every iterate's one pass is both the attack and the loss
    uses = frozenset({"steps", "step_size", "init", "init_magnitude", "norm", "scope",
                      "linf_step", "projection"})  # fmt: skip
    unused_reason = " (its loss is the mean of the ascent iterates' losses)"
    default_dropout = "shared"  # the reference reuses one dropout mask across iterates
    defaults: ClassVar[dict[str, Any]] = {
        "steps": 2,
        "step_size": 0.1,
        "init": "uniform",
        "init_magnitude": 0.5,
        "norm": "l2",
        "linf_step": "max_norm",
        "weight_clean": 0.0,
        "weight_adv": 1.0,
        "weight_div": 0.0,
    }

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        k = self.opt.steps
        self.passes = (k, k)
        self.cost = (k + 1, 0, k)

    def grads(self, objective, params, info: BatchInfo, rng, state):
        grads, metrics, _, _ = self.grads_at(objective, params, info, rng, self.radius(info))
        return grads, metrics, state

    def start(self, info: BatchInfo, rng, radius):
        o = self.opt
        return ascent.init(
            jax.random.fold_in(rng, NOISE_STREAM), self.masks(info), info.shapes, o,
            o.init_magnitude, radius, project=False, rows=info.rows,
        )  # fmt: skip

    def attack(self, objective, params, info: BatchInfo, rng, radius, clean_out=None):
        """FreeLB's ascent without parameter gradients (for adaptive's radius checks)."""
        o = self.opt
        inner = self.inner_loss(objective, params, info, clean_out, "ce")
        return ascent.run(
            inner, self.start(info, rng, radius), self.masks(info), o, steps=o.steps,
            step_size=self.step_size(radius, info), radius=radius,
            rng_at=lambda t: self.attack_rng(rng, t + 1),
        )  # fmt: skip

    def grads_at(self, objective, params, info: BatchInfo, rng, radius):
        """Accumulated gradients and metrics at ``radius``; also clean and last outputs."""
        o, masks, k = self.opt, self.masks(info), self.opt.steps
        clean_out = jax.lax.stop_gradient(objective(params, {}, self.rng_at(rng, 0))[1])
        step_size = self.step_size(radius, info)

        def loss_fn(p, delta, t):
            per_example, outputs = objective(p, delta, self.rng_at(rng, t + 1))
            return info.local_mean(per_example), outputs

        def body(carry, t):
            delta, acc, _, _ = carry
            (loss, out), (g_params, g_delta) = jax.value_and_grad(
                loss_fn, argnums=(0, 1), has_aux=True
            )(params, delta, t)
            acc = jax.tree.map(lambda a, g: a + g / k, acc, g_params)
            new = ascent.step(delta, g_delta, masks, o, step_size, radius)
            return (new, acc, delta, out), loss

        zeros = jax.tree.map(jnp.zeros_like, params)
        out_shape = jax.eval_shape(lambda: clean_out)
        out0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)
        start = self.start(info, rng, radius)
        (_, grads, last_delta, adv_out), losses = jax.lax.scan(
            body, (start, zeros, start, out0), jnp.arange(k)
        )
        terms = {
            "clean": info.local_mean(self.task.loss(clean_out, info.batch)),
            "adv": jnp.mean(losses),
            "div": info.local_div_mean(self.divergence(clean_out, adv_out, info, o.divergence)),
        }
        metrics = self.metrics(info, terms, last_delta, clean_out, adv_out)
        metrics["loss"] = info.psum(terms["adv"])  # the FreeLB objective itself
        return grads, metrics, clean_out, adv_out
