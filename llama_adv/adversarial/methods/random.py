"""``random`` (R3F, Aghajanyan et al. 2020): ``L(x) + lambda KL_sym(p(x), p(x + z))`` with
``z ~ U(-sigma, sigma)`` (``adv.init = "uniform"``, element-wise) or ``N(0, sigma^2)``
(``"normal"``); ``sigma = adv.init_magnitude`` (1e-5), ``lambda = adv.weight_div`` (1).

``adv.init = "sphere"``: ``z`` is a uniformly random direction scaled to the radius
(``adv.epsilon``, in ``adv.norm`` and ``adv.scope``). With ``weight_adv 1, weight_div 0``
that is the random-perturbation baseline of Miyato et al. (2017): ``L(x) + L(x + z)``.

No inner maximisation: two forwards and one backward through both.

The noisy forward runs on detached embeddings by default (``adv.random.detach``), as
fairseq's R3F (``examples/rxf/rxf_src/sentence_prediction_r3f.py``: ``noised_embeddings =
token_embeddings.detach().clone() + noise``): the embedding table gets gradient from the
clean branch only; ``adv.random.detach = False`` lets both branches reach it (this
framework's behaviour before). ``init = "sphere"`` (Miyato et al.'s random baseline, whose
perturbed loss trains the embeddings) never detaches.

Dropout: ``fresh`` by default: fairseq's R3F (``examples/rxf``, ``SentencePredictionR3F``)
runs the clean and the noisy forward as two train-mode calls, so each has its own mask.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax

from llama_adv.adversarial import geometry
from llama_adv.adversarial.base import NOISE_STREAM, BatchInfo, Method


class RandomPerturbation(Method):
    needs_radius = True
    divergence_only = True
    attack_pass = False  # the noisy pass enters the loss
    miyato_baseline = True
    uses = frozenset({"weight_clean", "weight_adv", "weight_div", "init", "init_magnitude",
                      "norm", "scope", "linf_step", "divergence"})  # fmt: skip
    passes = (2, 1)
    cost = (2, 0, 2)
    defaults: ClassVar[dict[str, Any]] = {
        "weight_clean": 1.0,
        "weight_adv": 0.0,
        "weight_div": 1.0,
        "init": "uniform",
        "init_magnitude": 1e-5,
        "divergence": "symmetric_kl",
    }

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        # Miyato's sphere baseline trains the embeddings through L(x + z): never detached.
        self.detach_perturbed = bool(config.random.detach) and self.opt.init != "sphere"

    def noise(self, rng, info: BatchInfo):
        """``{stream: [B, L, D]}`` element-wise noise of scale sigma (or, ``sphere``, a
        random direction of the radius's norm), zero where masked."""
        masks, o = self.masks(info), self.opt
        keys = jax.random.split(jax.random.fold_in(rng, NOISE_STREAM), len(info.shapes))
        if o.init == "sphere":
            directions = {
                k: geometry.example_noise(key, s, "normal", info.rows)
                for key, (k, s) in zip(keys, info.shapes.items(), strict=True)
            }
            return self.at_radius(directions, info, self.radius(info))
        return {
            # norm_kind "linf" gives element-wise U(-sigma, sigma), R3F's uniform noise.
            k: geometry.init(
                key, s, masks[k], o.init, o.init_magnitude, norm_kind="linf", rows=info.rows
            )
            for key, (k, s) in zip(keys, info.shapes.items(), strict=True)
        }

    def grads(self, objective, params, info: BatchInfo, rng, state):
        delta = self.noise(rng, info)
        clean_out, pullback = self.clean_forward(objective, params, self.rng_at(rng, 0))
        grads, terms, adv_out, _ = self.descent_grads(
            objective, params, delta, info, self.rng_at(rng, 1), clean_out, pullback
        )
        return grads, self.metrics(info, terms, delta, clean_out, adv_out), state
