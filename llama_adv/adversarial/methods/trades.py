"""``trades`` (Zhang et al. 2019): ``L(x) + beta KL(p(x) || p(x + delta))``.

``delta`` from ``K`` L-inf sign steps on ``KL(stopgrad p(x) || p(x + delta))`` starting at
``0.001 * N(0, 1)`` (``adv.linf_step = sign``, the reference's ``torch.sign(grad)``);
``beta = adv.weight_div``. The outer KL is differentiated through
both sides, as in the reference code. Defaults: K 10, beta 1, L-inf, step
``(0.03 / 0.031) * eps / K``: the reference's ``trades_loss`` defaults (yaodongyu/TRADES,
``trades.py``: step_size 0.003, epsilon 0.031, perturb_steps 10), about ``eps / 10`` at
K 10. Its CIFAR-10 script (``train_trades_cifar10.py``) passes step 0.007 (about
``2.26 eps / K``); set ``adv.step_size`` for that.

eps 0.031 (8/255) is an image-pixel radius; there is no text radius to carry over.

Dropout: ``eval`` by default, as the reference (yaodongyu/TRADES, ``trades.py``) attacks
under ``model.eval()``: the ascent passes, and the clean outputs the inner KL measures
against, are deterministic (one extra clean forward); the loss passes run in train mode.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax.numpy as jnp

from llama_adv.adversarial.methods.pgd import PGD


class TRADES(PGD):
    divergence_only = True
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

    def step_size(self, radius, info):
        """``adv.step_size`` (times the radius unit), or ``(0.03 / 0.031) * radius / K``
        (0.003 at eps 0.031, K 10)."""
        if self.opt.step_size > 0:
            return jnp.asarray(self.opt.step_size, jnp.float32) * self.unit(info)
        return (0.03 / 0.031) * jnp.asarray(radius, jnp.float32) / max(self.opt.steps, 1)

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        k = self.opt.steps
        self.passes = (k + 2, k + 1)
        self.cost = (k + 2, k, 2)
