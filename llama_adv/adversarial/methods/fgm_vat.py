"""``fgm_vat``: adversarial and virtual adversarial training together (Miyato et al. 2017,
"adversarial + virtual adversarial", the last row of their Table 2).

``w_clean L(x) + w_adv L(x + r_adv) + w_div KL(stopgrad p(x) || p(x + r_vadv))``, with
``r_adv`` the FGM perturbation (the normalised gradient of the labelled clean loss) and
``r_vadv`` VAT's power-iteration perturbation, both at radius ``adv.epsilon``. Every weight
defaults to 1 and ``adv.steps`` (power iterations) to 1, ``xi`` is ``adv.vat.xi``.

Unlabelled examples (see :mod:`~llama_adv.adversarial.methods.vat`) feed only the KL term:
their ``r_adv`` is 0 and their ``L`` terms are masked. Cost: the clean forward and one
backward give the clean parameter gradient and ``r_adv`` (as in FGM); ``steps`` power
iterations; then one backward through the two perturbed forwards.

Dropout: ``fresh`` by default, as FGM and VAT.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from llama_adv.adversarial import ascent
from llama_adv.adversarial.base import BatchInfo
from llama_adv.adversarial.methods.vat import VAT, with_all_labeled


class FGMVAT(VAT):
    divergence_only = False  # either term will do
    defaults: ClassVar[dict[str, Any]] = {**VAT.defaults, "weight_adv": 1.0}

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        k = self.opt.steps
        self.passes = (3 + k, 2 + k)
        self.cost = (3 + k, k, 3)

    def eval_cost(self):
        """``adv.dropout = eval``: VAT's deterministic clean reference, and the FGM
        direction's own forward and input backward."""
        return (2, 1, 0) if self.dropout == "eval" else (0, 0, 0)

    def grads(self, objective, params, info: BatchInfo, rng, state):
        o = self.opt
        everyone = self.task.denominator(with_all_labeled(info.whole_batch))
        info = dataclasses.replace(info, denominator=info.psum(jnp.sum(everyone)))
        clean_rng = self.rng_at(rng, 0)

        def clean_loss(p, delta):
            clean_out = objective(p, delta, clean_rng)[1]
            return self.clean_term(clean_out, info), clean_out

        # One backward gives the clean parameter gradient and the FGM direction (FGM.grads_at).
        (_, clean_out), (g_clean, g_delta) = jax.value_and_grad(
            clean_loss, argnums=(0, 1), has_aux=True
        )(params, info.zeros())
        clean_out = jax.lax.stop_gradient(clean_out)  # its gradient is in g_clean
        radius = self.radius(info)
        if self.dropout == "eval":  # the FGM direction from a deterministic pass
            inner = self.inner_loss(objective, params, info, None, "ce")
            g_delta = ascent.grad(inner, info.zeros(), self.attack_rng(rng, 3))
        r_adv = self.at_radius(g_delta, info, radius)
        r_vadv = self.attack(objective, params, info, rng, radius, clean_out)

        def perturbed_loss(p):
            per_adv, adv_out = objective(p, r_adv, self.rng_at(rng, 1))
            vadv_out = objective(p, r_vadv, self.rng_at(rng, 2))[1]
            kl = self.divergence(clean_out, vadv_out, info, o.divergence)
            terms = {
                "clean": self.clean_term(clean_out, info),
                "adv": self.adv_term(per_adv, adv_out, info),
                "div": info.local_div_mean(kl),
            }
            return o.weight_adv * terms["adv"] + o.weight_div * terms["div"], (terms, adv_out)

        (_, (terms, adv_out)), grads = jax.value_and_grad(perturbed_loss, has_aux=True)(params)
        grads = jax.tree.map(lambda a, b: o.weight_clean * a + b, g_clean, grads)
        return grads, self.metrics(info, terms, r_adv, clean_out, adv_out), state
