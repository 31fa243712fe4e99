"""``smart`` (Jiang et al. 2020): smoothness-inducing adversarial regularisation with a
Bregman proximal point step.

Loss ``L(x) + lambda_s max_delta KL_sym(p(x), p(x + delta)) + mu D_breg`` with
``D_breg = KL_sym(p_theta(x), p_teacher(x))`` and the teacher an EMA of the parameters:
``teacher <- beta * teacher + (1 - beta) * theta`` after every update, beta
``adv.smart.ema_early`` (0.99) before ``adv.smart.ema_switch_step`` and
``adv.smart.ema_late`` (0.999) after (default -1: after 10% of ``train.num_steps``, as in
the paper). With ``adv.begin_step > 0`` the teacher is set to the student at that step (the
first adversarial update), so that it never lags behind the clean warm-up.
``lambda_s = adv.weight_div``, ``mu = adv.smart.weight_breg``.

Inner: ``K`` (1) steps on ``KL(p(x + delta) || stopgrad p(x))`` from ``N(0, sigma^2)``,
sigma 1e-5, step 1e-3, L-inf per token projected onto the ``eps`` ball, each step
``g / ||g||_inf`` per token (``adv.linf_step = max_norm``, as the code's normalisation and
ALUM's Algorithm 1; ``sign`` is the alternative); the public code's
per-token rescaling onto the sphere is ``adv.projection = "sphere"`` (with epsilon 1 it is
that code's unit sphere). Passes: ``(K + 2)`` forwards and ``(K + 1)`` backwards, plus the
teacher forward.

Radius: the paper and namisan/mt-dnn give none (the code's ``adv_epsilon`` 1e-6 is the
normalisation's numerical guard, its noise lands on the unit L-inf sphere); the step 1e-3
is absolute and, like ``adv.epsilon``, scales with ``adv.radius_unit = embedding_rms``;
sigma (``adv.init_magnitude``) stays absolute.

Dropout: ``fresh`` by default (the clean, noisy and ascent forwards are separate
train-mode calls in namisan/mt-dnn); the teacher forward reuses the clean pass's key,
so that ``D_breg`` measures the parameter change and not dropout noise.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from llama_adv.adversarial.base import BatchInfo, fail
from llama_adv.adversarial.methods.pgd import PGD


class SMART(PGD):
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
        "projection": "ball",
    }

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        k = self.opt.steps
        self.sc = config.smart
        self.passes = (k + 3, k + 1)
        self.cost = (k + 3, k, 2)

    @classmethod
    def validate(cls, config):
        super().validate(config)
        s = config.smart
        for field in ("ema_early", "ema_late"):
            if not 0 <= s[field] <= 1:
                raise fail(f"smart.{field}", f"must be in [0, 1], got {s[field]}.")
        if s.weight_breg < 0:
            raise fail("smart.weight_breg", f"must be >= 0, got {s.weight_breg}.")
        if s.ema_switch_step < -1:
            raise fail(
                "smart.ema_switch_step",
                f"must be >= 0 (or -1: 10% of training), got {s.ema_switch_step}.",
            )

    def init_state(self, params, num_examples: int, batch_shapes: dict | None = None):
        """``{"teacher": params}``: the EMA teacher starts at the initial parameters."""
        return {"teacher": jax.tree.map(jnp.array, params)}

    @property
    def switch_step(self) -> int:
        """``adv.smart.ema_switch_step``, or 10% of ``train.num_steps`` when it is -1."""
        if self.sc.ema_switch_step >= 0:
            return int(self.sc.ema_switch_step)
        return self.num_steps // 10

    def ema_decay(self, step: jax.Array) -> jax.Array:
        return jnp.where(step < self.switch_step, self.sc.ema_early, self.sc.ema_late)

    def bregman(self, objective, teacher, info: BatchInfo, rng):
        """``clean_out -> (mu * local D_breg, metrics)`` against the teacher's outputs."""
        teacher_out = jax.lax.stop_gradient(objective(teacher, {}, rng)[1])

        def term(clean_out):
            div = info.local_div_mean(self.divergence(clean_out, teacher_out, info, "symmetric_kl"))
            return self.sc.weight_breg * div, {"loss_breg": info.psum(div)}

        return term

    def grads(self, objective, params, info: BatchInfo, rng, state):
        begin = int(self.config.get("begin_step", 0))
        if begin > 0:  # the adversary starts now: the teacher starts at the student
            state = {
                "teacher": jax.tree.map(
                    lambda t, p: jnp.where(info.step == begin, p, t), state["teacher"], params
                )
            }
        radius = self.radius(info)
        clean_rng = self.rng_at(rng, 0)
        clean_out, pullback = self.clean_forward(objective, params, clean_rng)
        delta = self.attack(objective, params, info, rng, radius, clean_out)
        extra = self.bregman(objective, state["teacher"], info, clean_rng)
        grads, terms, adv_out, breg = self.descent_grads(
            objective, params, delta, info, self.rng_at(rng, 1), clean_out, pullback, extra
        )
        metrics = self.metrics(info, terms, delta, clean_out, adv_out)
        metrics["loss"] = metrics["loss"] + self.sc.weight_breg * breg["loss_breg"]
        return grads, {**metrics, **breg}, state

    def after_descend(self, params, new_params, state, info: BatchInfo):
        """The teacher moves toward the updated student (Jiang et al.'s momentum)."""
        beta = self.ema_decay(info.step)
        teacher = jax.tree.map(lambda t, p: beta * t + (1 - beta) * p, state["teacher"], new_params)
        return new_params, {"teacher": teacher}, {"teacher_decay": beta}
