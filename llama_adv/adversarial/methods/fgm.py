"""``fgm``: the fast gradient method of Miyato et al. (2017).

``r = eps * g / ||g||_2`` with ``g`` the gradient of the clean loss with respect to the
embeddings, per example over the whole sequence; the loss is
``w_clean * L(x) + w_adv * L(x + r)``. Two forward and two backward passes: the clean
backward yields both the parameter gradient and ``g``.

Radius: the paper's eps 5.0 (IMDB) is on embeddings normalised to zero mean and unit
variance per dimension, whose rows have norm about ``sqrt(d)`` (256-wide there), so about
``0.31`` times the RMS row norm: ``adv.radius_unit = embedding_rms, adv.epsilon = 0.3``
carries it to another table; ``adv.epsilon`` itself stays the framework-wide default.

Dropout: ``fresh`` by default (a new mask per forward: the clean and perturbed
forwards are separate train-mode calls in Miyato et al.'s code); under ``eval`` the
direction comes from a deterministic forward and input backward of its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax

from llama_adv.adversarial import ascent
from llama_adv.adversarial.base import BatchInfo, Method


class FGM(Method):
    needs_radius = True
    uses = frozenset({"weight_clean", "weight_adv", "weight_div", "norm", "scope", "linf_step",
                      "inner", "divergence"})  # fmt: skip
    passes = (2, 2)
    cost = (2, 0, 2)
    defaults: ClassVar[dict[str, Any]] = {
        "weight_clean": 1.0,
        "weight_adv": 1.0,
        "weight_div": 0.0,
        "norm": "l2",
    }

    def eval_cost(self):
        """Under ``adv.dropout = eval`` the direction takes a deterministic forward and
        input backward of its own (plus the clean reference of a divergence inner)."""
        if self.dropout != "eval":
            return (0, 0, 0)
        return (1, 0, 0) if self.opt.inner != "ce" else (1, 1, 0)

    def grads(self, objective, params, info: BatchInfo, rng, state):
        grads, metrics, _, _ = self.grads_at(objective, params, info, rng, self.radius(info))
        return grads, metrics, state

    def attack(self, objective, params, info: BatchInfo, rng, radius, clean_out=None):
        """The FGM perturbation at ``radius`` (scalar or ``[B]``), without parameter grads."""
        inner = self.inner_loss(objective, params, info, clean_out, self.opt.inner)
        g = ascent.grad(inner, info.zeros(), self.attack_rng(rng, 2))
        return self.at_radius(g, info, radius)

    def grads_at(self, objective, params, info: BatchInfo, rng, radius):
        """Gradients and metrics at ``radius``; also the clean and perturbed outputs."""
        o = self.opt
        clean_rng = self.rng_at(rng, 0)

        def clean_loss(p, delta):
            per_example, outputs = objective(p, delta, clean_rng)
            return info.local_mean(per_example), outputs

        # One backward gives the clean parameter gradient and the embedding gradient.
        (_, clean_out), (g_clean, g_delta) = jax.value_and_grad(
            clean_loss, argnums=(0, 1), has_aux=True
        )(params, info.zeros())
        # The direction needs a pass of its own when it maximises a divergence instead of
        # the loss, or when the attack runs deterministic (adv.dropout=eval).
        if o.inner != "ce" or self.dropout == "eval":
            delta = self.attack(objective, params, info, rng, radius, clean_out)
        else:
            delta = self.at_radius(g_delta, info, radius)
        # The clean term's gradient is already in hand (g_clean): no pullback, so the
        # clean outputs are held fixed in the combined loss below.
        clean_out = jax.lax.stop_gradient(clean_out)
        grads, terms, adv_out, _ = self.descent_grads(
            objective, params, delta, info, self.rng_at(rng, 1), clean_out, None
        )
        grads = jax.tree.map(lambda a, b: o.weight_clean * a + b, g_clean, grads)
        return grads, self.metrics(info, terms, delta, clean_out, adv_out), clean_out, adv_out
