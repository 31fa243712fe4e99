"""``lat``: latent adversarial training (Casper et al. 2024, untargeted; Sheshadri et al.
2024, "Targeted Latent Adversarial Training Improves Robustness to Persistent Harmful
Behaviors in LLMs").

The adversary: a perturbation of every stream of ``adv.streams`` (token embeddings and the
residual stream at chosen depths, ``layer:N``), zero at the start, optimised for ``K``
steps with AdamW (gradient clipped to global norm 1, as the reference's ``clip_grad``),
each stream's perturbation of each token clipped to L2 norm ``eps`` after every step.

- ``targeted`` (the default; chat batches with harmful rows): the adversary minimises
  ``a_toward * CE(harmful target | delta) + a_away * UL(safe reply | delta)`` on the
  harmful rows, ``UL`` the unlikelihood ``-log(1 - p)`` (tokens with ``log p < -5`` left
  out, HarmBench's ``log_1_minus_p_loss``); the model then minimises
  ``d_toward * CE(safe reply | delta) + d_away * UL(harmful target | delta)`` on the same
  rows, plus ``d_sft * CE(utility reply)`` and ``d_kl * KL / sg(KL)`` on the utility rows
  without perturbation, ``KL = KL(model || reference)`` to the parameters at the start of
  training (with LoRA: the frozen base, since B starts at zero). The KL term is divided by
  its own value, as the reference does, so only its direction counts.
- untargeted (``adv.lat.targeted = False``, any task): the adversary maximises the task loss
  and the model minimises it at ``x + delta``.

Each weight group is normalised to sum to 1 (the reference's ``normalize_dict``). The model
takes ``adv.lat.defense_steps`` optimizer steps per attack on the same batch and
perturbation (``model_iterations_per_step``); the learning-rate schedule counts them, as
FreeAT's replays.

Defaults: the Llama-3-8B jailbreak setting of aengusl/latent-adversarial-training
(``notebooks/jailbreaks.ipynb``, ``latent_at/lat_methods.py``): 16 steps, lr 1e-3,
eps 6.0 (absolute: residual-stream norms are the model's own), adversary toward 0.5 /
away 0.5, model toward 0.5 / away 0.5 / kl 0.1, 4 defence steps; its layers are
``adv.streams = inputs,layer:8,layer:16,layer:24,layer:30``. The reference re-creates the
defence optimizer at every step; here the train loop's optimizer keeps its state.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from llama_adv.adversarial import geometry
from llama_adv.adversarial.base import BatchInfo, Method, fail, perturbation_norms
from llama_adv.adversarial.methods import chat_terms as terms

UNLIKELY = -5.0  # log p below which UL leaves a token out (HarmBench, both references)


def _normalised(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in weights.items()}


class LAT(Method):
    unused_reason = " (its attack and losses are set in adv.lat)"
    microbatch_refusal = (
        "it takes adv.lat.defense_steps optimizer updates per attack, and its loss "
        "normalises the KL term by the batch's own value"
    )
    defaults: ClassVar[dict[str, Any]] = {"weight_clean": 0.0, "weight_adv": 1.0, "weight_div": 0.0}

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        c = config.lat
        self.targeted = bool(c.targeted)
        self.steps, self.lr, self.epsilon = int(c.steps), float(c.step_size), float(c.epsilon)
        self.adversary_weights = _normalised({"toward": c.adv_toward, "away": c.adv_away})
        self.model_weights = _normalised(
            {"toward": c.def_toward, "away": c.def_away, "sft": c.def_sft, "kl": c.def_kl}
        )
        self.defense_steps = int(c.defense_steps)
        self.updates_per_batch = self.defense_steps
        k, m = self.steps, self.defense_steps
        forwards = 2 if self.targeted else 1
        self.passes = (k * forwards + m * (forwards + 1), k + m)
        self.cost = (k * forwards + m * (forwards + 1), k, m)
        self.adversary = optax.chain(
            optax.clip_by_global_norm(float(c.grad_clip)),
            optax.adamw(self.lr, weight_decay=float(c.weight_decay)),  # torch AdamW's 0.01
        )

    @classmethod
    def validate(cls, config):
        super().validate(config)
        c = config.lat
        if c.steps < 1:
            raise fail("lat.steps", f"must be >= 1 attack steps, got {c.steps}.")
        if c.defense_steps < 1:
            raise fail("lat.defense_steps", f"must be >= 1, got {c.defense_steps}.")
        for field in ("epsilon", "step_size", "adv_toward", "adv_away", "def_toward",
                      "def_away", "def_sft", "def_kl", "grad_clip", "weight_decay"):  # fmt: skip
            if c[field] < 0:
                raise fail(f"lat.{field}", f"must be >= 0, got {c[field]}.")

    @classmethod
    def required_task(cls, config):
        return "chat" if config.lat.targeted else None  # untargeted LAT: any task

    def init_state(self, params, num_examples: int, batch_shapes: dict | None = None):
        """``{"reference": params}`` when the KL term is on, else ``{}``."""
        if not (self.targeted and self.model_weights["kl"] > 0):
            return {}
        return {"reference": jax.tree.map(jnp.copy, params)}

    def attack_masks(self, info: BatchInfo) -> dict[str, jax.Array]:
        masks = self.masks(info)
        if not self.targeted:
            return masks
        harmful, _ = terms.groups(info.batch)
        return {k: m * harmful[:, None] for k, m in masks.items()}

    def _toward_away(self, objective, p, delta, info, rng, model_side: bool):
        """``(toward, away)`` local shares on harmful rows at ``delta``: the adversary's
        (harmful CE, safe UL) or the model's (safe CE, harmful UL)."""
        batch = info.batch
        harmful, _ = terms.groups(batch)
        main = objective(p, delta, jax.random.fold_in(rng, 0) if rng is not None else None)[1]
        away = objective(
            p, delta, jax.random.fold_in(rng, 1) if rng is not None else None, view=terms.AWAY
        )[1]
        lp_main, l1mp_main = terms.token_log_probs(main["logits"], batch["targets"])
        lp_away, l1mp_away = terms.token_log_probs(away["logits"], batch["away_targets"])
        main_w, away_w = terms.token_weights(batch), terms.token_weights(batch, terms.AWAY)
        if model_side:
            toward = terms.group_share(-lp_main, main_w, harmful, info)
            away_ul = terms.unlikelihood(lp_away, l1mp_away, UNLIKELY)
            return toward, terms.group_share(away_ul, away_w, harmful, info), main
        toward = terms.group_share(-lp_away, away_w, harmful, info)
        main_ul = terms.unlikelihood(lp_main, l1mp_main, UNLIKELY)
        return toward, terms.group_share(main_ul, main_w, harmful, info), main

    def adversary_loss(self, objective, params, info: BatchInfo, rng):
        """``(delta, t) -> scalar`` the adversary minimises."""
        w = self.adversary_weights

        def loss(delta, t):
            key = self.attack_rng(rng, t + 4)
            if not self.targeted:
                return -info.local_mean(objective(params, delta, key)[0])
            toward, away, _ = self._toward_away(objective, params, delta, info, key, False)
            return w["toward"] * toward + w["away"] * away

        return loss

    def attack(self, objective, params, info: BatchInfo, rng) -> dict[str, jax.Array]:
        masks = self.attack_masks(info)
        radius = self.epsilon * self.radius_scale(info)
        loss = self.adversary_loss(objective, params, info, rng)

        def body(t, carry):
            delta, opt_state = carry
            grads = jax.grad(loss)(delta, t)
            updates, opt_state = self.adversary.update(grads, opt_state, delta)
            delta = optax.apply_updates(delta, updates)
            delta = {
                k: geometry.apply_mask(geometry.project(v, radius, "l2", "token"), masks[k])
                for k, v in delta.items()
            }
            return delta, opt_state

        zeros = info.zeros()
        delta, _ = jax.lax.fori_loop(0, self.steps, body, (zeros, self.adversary.init(zeros)))
        return jax.tree.map(jax.lax.stop_gradient, delta)

    def model_loss(self, objective, info: BatchInfo, delta, state):
        """``(params, rng) -> (scalar, parts)`` the model minimises at ``delta``."""
        w = self.model_weights
        batch = info.batch

        def loss(p, rng):
            if not self.targeted:
                per_example, _ = objective(p, delta, rng)
                value = info.local_mean(per_example)
                return value, {"adv": value}
            toward, away, _ = self._toward_away(objective, p, delta, info, rng, True)
            parts = {"toward": toward, "away": away}
            total = w["toward"] * toward + w["away"] * away
            if w["sft"] > 0 or w["kl"] > 0:
                _, utility = terms.groups(batch)
                clean = objective(p, {}, jax.random.fold_in(rng, 2))[1]
                main_w = terms.token_weights(batch)
                if w["sft"] > 0:
                    lp, _ = terms.token_log_probs(clean["logits"], batch["targets"])
                    parts["sft"] = terms.group_share(-lp, main_w, utility, info)
                    total += w["sft"] * parts["sft"]
                if w["kl"] > 0:
                    reference = jax.lax.stop_gradient(state["reference"])
                    ref = objective(reference, {}, None)[1]
                    per_row = self.task.divergence(clean, ref, batch, "kl")  # KL(model || ref)
                    rows = utility
                    kl = jnp.sum(per_row * rows) / jnp.maximum(
                        info.psum(jnp.sum(self.task.denominator(batch) * rows)), 1e-9
                    )
                    parts["kl"] = kl
                    total += w["kl"] * kl / (jax.lax.stop_gradient(info.psum(kl)) + 1e-8)
            return total, parts

        return loss

    def update(self, objective, params, opt_state, info: BatchInfo, rng, state, descend):
        if self.targeted:
            terms.require_chat_batch(info.batch, "lat (targeted)")
        delta = self.attack(objective, params, info, rng)
        loss = self.model_loss(objective, info, delta, state)

        def defend(carry, t):
            params, opt_state = carry
            (value, parts), grads = jax.value_and_grad(loss, has_aux=True)(
                params, self.rng_at(rng, t)
            )
            params, opt_state, grad_norm = descend(params, opt_state, grads)
            return (params, opt_state), (value, parts, grad_norm)

        (params, opt_state), (values, parts, norms) = jax.lax.scan(
            defend, (params, opt_state), jnp.arange(self.defense_steps)
        )
        delta_norms = perturbation_norms(delta, "l2")
        metrics = {
            "loss": info.psum(values[0]),
            **{f"loss_{k}": info.psum(v[0]) for k, v in parts.items()},
            "grad_norm": norms[-1],
            "perturbation_norm": info.global_example_mean(delta_norms),
            "perturbation_norm_max": info.global_max(delta_norms),
        }
        return params, opt_state, metrics, state
