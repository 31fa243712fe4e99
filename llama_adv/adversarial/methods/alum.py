"""``alum`` (Liu et al. 2020): ``L(x) + alpha_adv KL_sym(p(x), p(x + delta))``.

One ascent step on ``KL(p(x + delta) || stopgrad p(x))`` from ``N(0, sigma^2)``
(sigma 1e-5, step 1e-3), normalised per token in L-inf: by default the reference code's
rescaling onto the sphere (``adv.projection = "sphere"``, radius ``adv.epsilon``); "ball"
projects instead, after a ``g / ||g||_inf`` step per token (``adv.linf_step = max_norm``,
Algorithm 1 of the paper). ``alpha_adv = adv.weight_div``: 1 (fine-tuning; 10 for
pre-training). The adversarial term is on whenever the method is ``alum`` (config
validation refuses a zero weight), unlike the released script whose flag defaults to off.

Radius: as SMART's code (namisan/mt-dnn), none besides the unit L-inf sphere; step 1e-3
absolute (times the unit under ``adv.radius_unit = embedding_rms``), sigma absolute.

Dropout: ``fresh`` by default (separate train-mode forwards in namisan/mt-dnn's
ALUM code).
"""

from __future__ import annotations

from typing import Any, ClassVar

from llama_adv.adversarial.methods.pgd import PGD


class ALUM(PGD):
    divergence_only = True
    defaults: ClassVar[dict[str, Any]] = {
        "weight_clean": 1.0,
        "weight_adv": 0.0,
        "weight_div": 1.0,
        "steps": 1,
        "step_size": 1e-3,
        "init": "normal",
        "init_magnitude": 1e-5,
        "norm": "linf",
        "linf_step": "max_norm",
        "scope": "token",
        "inner": "reverse_kl",
        "divergence": "symmetric_kl",
        "projection": "sphere",
    }

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        k = self.opt.steps
        self.passes = (k + 2, k + 1)
        self.cost = (k + 2, k, 2)
