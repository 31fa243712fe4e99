"""``vat``: virtual adversarial training (Miyato et al. 2017).

``L(x) + lambda KL(stopgrad p(x) || p(x + r))`` with ``r`` from power iteration:
``d ~ N(0, 1)``, then ``adv.steps`` times ``d <- grad_r KL(p(x) || p(x + xi d / ||d||))``,
and ``r = eps d / ||d||``; ``xi = adv.vat.xi`` (0.1), ``lambda = adv.weight_div`` (1).
The paper's eps 5.0 is on normalised embeddings, as for ``fgm`` (about 0.31 in
``adv.radius_unit = embedding_rms``); ``xi`` stays absolute (only the probe's direction
matters).

Unlabelled examples: the KL term needs no labels, so a batch may mix labelled and
unlabelled examples. An example is unlabelled when the batch has a ``"labeled"`` field
``[B]`` that is 0 for it, or (classification) its ``"label"`` is negative. Unlabelled
examples contribute only to the KL term; the supervised term is the mean over labelled
examples of the global batch (0 when there are none), the KL term the mean over all of
its examples. Keep ``"weight"`` at 1 for them (weight 0 means padding and removes them
from every term).

Dropout: ``fresh`` by default (a new mask per forward pass: the clean, probe and
perturbed forwards are separate train-mode calls in Miyato et al.'s code).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from llama_adv.adversarial import ascent, geometry
from llama_adv.adversarial.base import NOISE_STREAM, BatchInfo, Method, fail


def labeled_mask(batch: dict) -> jax.Array:
    """``[B]`` float: 1 for labelled examples (see the module docstring)."""
    weight = batch["weight"]
    labeled = jnp.ones(weight.shape, jnp.float32)
    if "labeled" in batch:
        labeled = labeled * (batch["labeled"] > 0)
    if "label" in batch:
        labeled = labeled * (batch["label"] >= 0)
    return labeled


def with_all_labeled(batch: dict) -> dict:
    """``batch`` with negative labels replaced by 0, so that the task counts every example
    (the classification task leaves unlabelled ones out of its loss and denominator)."""
    if "label" not in batch:
        return batch
    return {**batch, "label": jnp.maximum(batch["label"], 0)}


class VAT(Method):
    iterative = True  # adv.steps power iterations
    needs_radius = True
    divergence_only = True
    uses = frozenset({"weight_clean", "weight_adv", "weight_div", "steps", "norm", "scope",
                      "linf_step", "inner", "divergence"})  # fmt: skip
    defaults: ClassVar[dict[str, Any]] = {
        "weight_clean": 1.0,
        "weight_adv": 0.0,
        "weight_div": 1.0,
        "steps": 1,
        "norm": "l2",
        "inner": "kl",
        "divergence": "kl",
    }
    div_through_clean = False  # the clean side of the KL is a fixed target

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        k = self.opt.steps
        self.passes = (2 + k, 1 + k)
        self.cost = (2 + k, k, 2)

    @classmethod
    def validate(cls, config):
        super().validate(config)
        if config.vat.xi <= 0:
            raise fail("vat.xi", f"must be > 0, got {config.vat.xi}.")

    def clean_term(self, clean_out: dict, info: BatchInfo) -> jax.Array:
        batch = with_all_labeled(info.batch)  # then masked by ``labeled``
        per_example = self.task.loss(clean_out, batch) * labeled_mask(info.batch)
        whole = info.whole_batch
        labeled = labeled_mask(whole)
        denominator = info.psum(jnp.sum(self.task.denominator(with_all_labeled(whole)) * labeled))
        return jnp.sum(per_example) / jnp.maximum(denominator, 1e-9)

    def adv_term(self, per_example, adv_out: dict, info: BatchInfo) -> jax.Array:
        return self.clean_term(adv_out, info)  # labelled examples only, like the clean term

    def attack(self, objective, params, info: BatchInfo, rng, radius, clean_out):
        """Power iteration for the most sensitive direction, scaled to ``radius``."""
        o, masks = self.opt, self.masks(info)
        keys = jax.random.split(jax.random.fold_in(rng, NOISE_STREAM), len(info.shapes))
        d = {
            k: geometry.init(key, s, masks[k], "normal", 1.0, rows=info.rows)
            for key, (k, s) in zip(keys, info.shapes.items(), strict=True)
        }
        inner = self.inner_loss(objective, params, info, clean_out, o.inner)

        def unit(v):
            return geometry.normalize_streams(v, masks, "l2", o.scope, "sign", o.stream_geometry)

        def body(d, t):
            r = jax.tree.map(lambda u: self.config.vat.xi * u, unit(d))
            return ascent.grad(inner, r, self.attack_rng(rng, t + 2)), None

        d, _ = jax.lax.scan(body, d, jnp.arange(o.steps))
        r = self.at_radius(d, info, radius)
        r = geometry.project_streams(r, radius, o.norm, o.scope, o.stream_geometry)
        return {k: jax.lax.stop_gradient(geometry.apply_mask(v, masks[k])) for k, v in r.items()}

    def grads(self, objective, params, info: BatchInfo, rng, state):
        # A classification info.denominator counts labelled examples only; the KL term
        # (``local_mean`` in descent_grads) is averaged over every example instead.
        everyone = self.task.denominator(with_all_labeled(info.whole_batch))
        info = dataclasses.replace(info, denominator=info.psum(jnp.sum(everyone)))
        clean_out, pullback = self.clean_forward(objective, params, self.rng_at(rng, 0))
        delta = self.attack(objective, params, info, rng, self.radius(info), clean_out)
        grads, terms, adv_out, _ = self.descent_grads(
            objective, params, delta, info, self.rng_at(rng, 1), clean_out, pullback
        )
        return grads, self.metrics(info, terms, delta, clean_out, adv_out), state
