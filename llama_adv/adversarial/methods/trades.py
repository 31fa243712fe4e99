"""``trades`` (Zhang et al. 2019): ``L(x) + beta KL(p(x) || p(x + delta))``.

``delta`` from ``K`` L-inf sign steps on ``KL(stopgrad p(x) || p(x + delta))`` starting at
``0.001 * N(0, 1)`` (``adv.linf_step = sign``, the reference's ``torch.sign(grad)``);
``beta = adv.weight_div``. The outer KL is differentiated through
both sides, as in the reference code. Defaults: K 10, beta 1, L-inf, step ``2.5 eps / K``.

Dropout: ``eval`` by default, as the reference (yaodongyu/TRADES, ``trades.py``) attacks
under ``model.eval()``: the ascent passes, and the clean outputs the inner KL measures
against, are deterministic (one extra clean forward); the loss passes run in train mode.
"""

from __future__ import annotations

from typing import Any, ClassVar

from llama_adv.adversarial.methods.pgd import PGD


class TRADES(PGD):
    default_dropout = "eval"  # the reference attacks under model.eval()
    defaults: ClassVar[dict[str, Any]] = {
        "weight_clean": 1.0,
        "weight_adv": 0.0,
        "weight_div": 1.0,
        "steps": 10,
        "init": "normal",
        "init_magnitude": 1e-3,
        "norm": "linf",
        "linf_step": "sign",
        "inner": "kl",
        "divergence": "kl",
    }

    def __init__(self, config, task):
        super().__init__(config, task)
        k = self.opt.steps
        self.passes = (k + 2, k + 1)
        self.cost = (k + 2, k, 2)
