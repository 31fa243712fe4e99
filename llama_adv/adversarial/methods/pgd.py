"""``pgd``: ``L(x + delta_K)`` (plus ``w_clean L(x)`` if configured) with ``delta_K`` from
``K`` projected ascent steps started at a random point of the ball (Madry et al.).

Defaults: L2 per example, ``K = 3``, step ``2.5 eps / K``, uniform start of magnitude
``eps`` (FreeLB's scaling). One clean forward (kept differentiable by ``jax.vjp``) gives
the flip-rate reference, the KL inner objectives and, when ``w_clean > 0``, the clean
gradient without another forward.

Dropout: ``fresh`` by default (a new mask per forward pass); ``eval`` runs the ascent
steps deterministic.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax

from llama_adv.adversarial import ascent
from llama_adv.adversarial.base import METHOD_OPTIONS, NOISE_STREAM, BatchInfo, Method


class PGD(Method):
    iterative = True
    uses = frozenset(METHOD_OPTIONS)
    defaults: ClassVar[dict[str, Any]] = {
        "weight_clean": 0.0,
        "weight_adv": 1.0,
        "weight_div": 0.0,
        "steps": 3,
        "init": "uniform",
        "init_magnitude": None,  # None: the radius
        "norm": "l2",
        "linf_step": "sign",
    }

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        k = self.opt.steps
        clean_backward = 1 if (self.opt.weight_clean or self.opt.weight_div) else 0
        self.passes = (k + 1, k + 1)
        self.cost = (k + 2, k, 1 + clean_backward)

    def grads(self, objective, params, info: BatchInfo, rng, state):
        grads, metrics, _, _ = self.grads_at(objective, params, info, rng, self.radius(info))
        return grads, metrics, state

    def attack(self, objective, params, info: BatchInfo, rng, radius, clean_out, record=False):
        """``K`` projected steps from a random start at ``radius`` (scalar or ``[B]``)."""
        return ascent.pgd(
            self.inner_loss(objective, params, info, clean_out, self.opt.inner),
            jax.random.fold_in(rng, NOISE_STREAM),
            self.masks(info),
            info.shapes,
            self.opt,
            radius=radius,
            step_size=self.step_size(radius, info),
            rng_at=lambda t: self.attack_rng(rng, t + 2),
            record=record,
            rows=info.rows,
        )

    def grads_at(self, objective, params, info: BatchInfo, rng, radius):
        """Gradients and metrics at ``radius``; also the clean and perturbed outputs."""
        clean_out, pullback = self.clean_forward(objective, params, self.rng_at(rng, 0))
        delta = self.attack(objective, params, info, rng, radius, clean_out)
        grads, terms, adv_out, _ = self.descent_grads(
            objective, params, delta, info, self.rng_at(rng, 1), clean_out, pullback
        )
        return grads, self.metrics(info, terms, delta, clean_out, adv_out), clean_out, adv_out
