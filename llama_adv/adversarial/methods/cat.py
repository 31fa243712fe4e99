"""``cat``: continuous adversarial training of chat models (Xhonneux et al. 2024, "Efficient
Adversarial Training in LLMs with Continuous Attacks"; C-AdvUL and C-AdvIPO).

The attack: on the harmful rows of a chat batch, a perturbation of the **prompt** token
embeddings (never the reply) that makes the harmful target likely: ``K`` steps of
``delta <- delta - lr * sign(grad CE(away target | prompt + delta))`` from zero, each token's
perturbation projected onto the L2 ball of radius ``eps * mean_i ||E_i||`` (the mean L2 norm
of the embedding rows). The last iterate is used (the reference keeps a best one but returns
the last).

The losses (``adv.cat.loss``):

- ``ul`` (C-AdvUL): ``w_toward * cutoff(CE(safe reply | x + delta), toward_cutoff)
  + w_away * cutoff(-CE(harmful target | x + delta), away_cutoff)
  + w_utility * CE(utility reply | x)``; ``cutoff(v, c) = v`` above ``c`` and
  ``c + 0.001 v`` below, on the batch means (``away_cutoff`` keeps the unlikelihood from
  growing without bound). ``adv.cat.away = log_1_minus_p`` replaces the away term by
  ``-log(1 - p)`` per token (tokens with ``log p`` below ``away_cutoff`` left out).
- ``ipo`` (C-AdvIPO): ``w_ipo * mean_rows (m - 1 / (2 beta))^2 + w_utility * CE(utility)``
  with the margin ``m = (lp_toward - lp_away) - (ref_toward - ref_away)`` of mean token
  log-probabilities under the perturbation, ``ref_*`` those of the reference model (the
  parameters at the start of training, kept in the method state; with LoRA adapters, whose
  B starts at zero, that is the frozen base, as the reference's disabled adapters).

Defaults are those of sophie-xhonneux/Continuous-AdvTrain (``config/adv_train_ul.yaml``,
``adv_train_ipo.yaml``, ``src/embedding_attack.py``): 10 signed steps of 1e-4, eps 0.05
(relative to the mean embedding-row norm), weights toward 0.5, away 0.5, utility 1.0,
cutoffs toward 0.5 and away -5 (IPO: toward cutoff unused, beta 0.25, weight 1). Their data
mix (12.5% harmful, 87.5% utility for UL; 50/50 for IPO) is the dataset's, not the method's.

Passes: ``K`` attack forwards and input backwards on the away view, then one forward of the
main fields (safe replies of harmful rows at ``x + delta``, utility rows clean: the attack
never touches them) and one of the away fields, with one backward through both (IPO: two
more reference forwards).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from llama_adv.adversarial import geometry
from llama_adv.adversarial.base import BatchInfo, Method, fail, perturbation_norms
from llama_adv.adversarial.methods import chat_terms as terms

LOSSES = ("ul", "ipo")
AWAY_TERMS = ("negative_cross_entropy", "log_1_minus_p")


class CAT(Method):
    # its attack and losses are configured in adv.cat (the paper's, not the shared options)
    unused_reason = " (its attack and losses are set in adv.cat)"
    microbatch_refusal = (
        "its loss cuts off batch means (adv.cat.toward_cutoff, away_cutoff), which a sum "
        "over microbatches does not give"
    )
    defaults: ClassVar[dict[str, Any]] = {"weight_clean": 0.0, "weight_adv": 1.0, "weight_div": 0.0}

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        c = config.cat
        self.steps, self.lr, self.epsilon = int(c.steps), float(c.step_size), float(c.epsilon)
        self.loss_kind, self.away_kind = c.loss, c.away
        self.w_toward, self.w_away = float(c.weight_toward), float(c.weight_away)
        self.w_utility, self.w_ipo = float(c.weight_utility), float(c.weight_ipo)
        self.toward_cutoff, self.away_cutoff = float(c.toward_cutoff), float(c.away_cutoff)
        self.beta = float(c.ipo_beta)
        reference = 2 if self.loss_kind == "ipo" else 0
        self.passes = (self.steps + 2 + reference, self.steps + 1)
        self.cost = (self.steps + 2 + reference, self.steps, 2)

    @classmethod
    def validate(cls, config):
        super().validate(config)
        c = config.cat
        if c.loss not in LOSSES:
            raise fail("cat.loss", f"must be one of {LOSSES}, got {c.loss!r}.")
        if c.away not in AWAY_TERMS:
            raise fail("cat.away", f"must be one of {AWAY_TERMS}, got {c.away!r}.")
        if c.steps < 1:
            raise fail("cat.steps", f"must be >= 1 attack steps, got {c.steps}.")
        for field in ("epsilon", "step_size", "weight_toward", "weight_away", "weight_utility"):
            if c[field] < 0:
                raise fail(f"cat.{field}", f"must be >= 0, got {c[field]}.")
        if config.get("perturb_tokens", "all") == "response":
            raise fail(
                "perturb_tokens", "cat attacks the prompt only (the paper's); use prompt or all."
            )
        if c.loss == "ipo" and not c.ipo_beta > 0:
            raise fail("cat.ipo_beta", f"must be > 0 for cat.loss=ipo, got {c.ipo_beta}.")

    @classmethod
    def required_task(cls, config):
        return "chat"

    def init_state(self, params, num_examples: int, batch_shapes: dict | None = None):
        """IPO: ``{"reference": params}`` (the reference model); UL: ``{}``."""
        if self.loss_kind != "ipo":
            return {}
        return {"reference": jax.tree.map(jnp.copy, params)}

    def attack_masks(self, info: BatchInfo) -> dict[str, jax.Array]:
        """``{stream: [B, L]}``: prompt tokens of harmful rows (the paper's instruction-only
        attack), within the model's perturbable positions."""
        harmful, _ = terms.groups(info.batch)
        prompt = info.batch["prompt_mask"].astype(jnp.float32)
        return {k: m * prompt * harmful[:, None] for k, m in self.masks(info).items()}

    def radius(self, info: BatchInfo) -> jax.Array:
        """``eps`` times the mean L2 norm of the embedding rows (no gradient)."""
        if info.embedding_norm is None:
            raise ValueError("cat needs BatchInfo.embedding_norm from the train step")
        return self.epsilon * jax.lax.stop_gradient(info.embedding_norm) * self.radius_scale(info)

    def attack(self, objective, params, info: BatchInfo, rng) -> dict[str, jax.Array]:
        """The signed-gradient prompt attack ``{stream: [B, L, D]}`` toward the harmful target."""
        masks, radius = self.attack_masks(info), self.radius(info)
        harmful, _ = terms.groups(info.batch)
        away_weights = terms.token_weights(info.batch, terms.AWAY)

        def away_ce(delta, t):
            out = objective(params, delta, self.attack_rng(rng, t + 2), view=terms.AWAY)[1]
            log_p, _ = terms.token_log_probs(out["logits"], info.batch["away_targets"])
            return terms.group_share(-log_p, away_weights, harmful, info)

        def body(t, delta):
            grads = jax.grad(away_ce)(delta, t)
            moved = {k: delta[k] - self.lr * jnp.sign(grads[k]) for k in delta}
            return {
                k: geometry.apply_mask(geometry.project(v, radius, "l2", "token"), masks[k])
                for k, v in moved.items()
            }

        delta = jax.lax.fori_loop(0, self.steps, body, info.zeros())
        return jax.tree.map(jax.lax.stop_gradient, delta)

    def grads(self, objective, params, info: BatchInfo, rng, state):
        terms.require_chat_batch(info.batch, "cat")
        delta = self.attack(objective, params, info, rng)
        batch = info.batch
        harmful, utility = terms.groups(batch)
        main_w, away_w = terms.token_weights(batch), terms.token_weights(batch, terms.AWAY)

        def loss_fn(p):
            main = objective(p, delta, self.rng_at(rng, 0))[1]  # toward rows perturbed
            away = objective(p, delta, self.rng_at(rng, 1), view=terms.AWAY)[1]
            lp_main, _ = terms.token_log_probs(main["logits"], batch["targets"])
            lp_away, l1mp_away = terms.token_log_probs(away["logits"], batch["away_targets"])
            parts = {
                "toward": terms.group_share(-lp_main, main_w, harmful, info),
                "utility": terms.group_share(-lp_main, main_w, utility, info),
            }
            if self.away_kind == "log_1_minus_p":
                per_token = terms.unlikelihood(lp_away, l1mp_away, self.away_cutoff)
                parts["away"] = terms.group_share(per_token, away_w, harmful, info)
            else:
                parts["away"] = -terms.group_share(-lp_away, away_w, harmful, info)
            if self.loss_kind == "ipo":
                parts["ipo"] = self.ipo_term(objective, state, delta, info, lp_main, lp_away)
                loss = self.w_ipo * parts["ipo"] + self.w_utility * parts["utility"]
            else:
                toward = terms.cutoff(parts["toward"], self.toward_cutoff)
                away = parts["away"]
                if self.away_kind == "negative_cross_entropy":
                    away = terms.cutoff(away, self.away_cutoff)
                loss = self.w_toward * toward + self.w_away * away
                loss += self.w_utility * parts["utility"]
            return loss, parts

        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        norms = perturbation_norms(delta, "l2")
        metrics = {
            "loss": info.psum(loss),
            **{f"loss_{k}": info.psum(v) for k, v in parts.items()},
            "perturbation_norm": info.global_example_mean(norms),
            "perturbation_norm_max": info.global_max(norms),
        }
        return grads, metrics, state

    def ipo_term(self, objective, state, delta, info: BatchInfo, lp_main, lp_away) -> jax.Array:
        """This device's share of the IPO loss over harmful rows (reference in eval mode)."""
        batch = info.batch
        harmful, _ = terms.groups(batch)
        reference = jax.lax.stop_gradient(state["reference"])
        ref_main = objective(reference, delta, None)[1]
        ref_away = objective(reference, delta, None, view=terms.AWAY)[1]
        main_w, away_w = terms.token_weights(batch), terms.token_weights(batch, terms.AWAY)
        ref_lp_main, _ = terms.token_log_probs(ref_main["logits"], batch["targets"])
        ref_lp_away, _ = terms.token_log_probs(ref_away["logits"], batch["away_targets"])
        margin = (
            terms.mean_log_prob(lp_main, main_w) - terms.mean_log_prob(lp_away, away_w)
        ) - jax.lax.stop_gradient(
            terms.mean_log_prob(ref_lp_main, main_w) - terms.mean_log_prob(ref_lp_away, away_w)
        )
        rows = info.psum(jnp.sum(harmful))
        return jnp.sum(terms.ipo_loss(margin, self.beta) * harmful) / jnp.maximum(rows, 1.0)
