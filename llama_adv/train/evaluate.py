"""Evaluation: clean metrics and metrics under an embedding-space attack, exactly
aggregated (sums and counts) over every example of a split."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from jax.sharding import Mesh

from llama_adv.adversarial import attacks
from llama_adv.data.base import Split
from llama_adv.data.pipeline import eval_batches
from llama_adv.models import Model
from llama_adv.tasks import Task
from llama_adv.train.mesh import to_global

EvalStep = Callable[[dict, dict, jax.Array], dict]


def attack_embeddings(model: Model, task: Task, params, batch, rng, attack: mlc.ConfigDict):
    """Runs the configured embedding attack on every stream; returns attacked outputs."""
    embedded = model.embed(params, batch)
    masks = {k: m.astype(jnp.float32) for k, m in model.perturbable_mask(batch).items()}
    shapes = {k: v.shape for k, v in embedded.items()}

    def loss_fn(delta):
        perturbed = {k: v + delta[k].astype(v.dtype) for k, v in embedded.items()}
        return task.loss(model.apply_embedded(params, perturbed, batch), batch)

    if attack.method == "fgm":
        delta = attacks.fgm_attack(
            loss_fn, masks, shapes, epsilon=attack.epsilon, norm=attack.norm, scope=attack.scope
        )
    else:
        step_size = attack.step_size or 2.5 * attack.epsilon / max(attack.steps, 1)
        delta = attacks.pgd_attack(
            loss_fn, masks, shapes, rng, epsilon=attack.epsilon, steps=attack.steps,
            step_size=step_size, norm=attack.norm, scope=attack.scope,
        )  # fmt: skip
    perturbed = {k: v + delta[k].astype(v.dtype) for k, v in embedded.items()}
    return model.apply_embedded(params, perturbed, batch)


def make_eval_step(model: Model, task: Task, attack: mlc.ConfigDict) -> EvalStep:
    """``eval_step(params, batch, rng) -> {name: (sum, count)}``, jitted; dropout off.

    ``attack_accuracy`` counts an example as correct only if it is correct both clean and
    attacked (TextAttack's accuracy under attack), so it never exceeds clean accuracy.
    """

    def step(params, batch, rng):
        outputs = model.apply(params, batch, deterministic=True)
        metrics = task.metrics(outputs, batch)
        if attack.method != "none":
            attacked = attack_embeddings(model, task, params, batch, rng, attack)
            for name, value in task.metrics(attacked, batch).items():
                metrics[f"attack_{name}"] = value
            weight = batch["weight"].astype(jnp.float32)
            robust = jnp.minimum(task.correct(outputs, batch), task.correct(attacked, batch))
            metrics["attack_accuracy"] = (jnp.sum(robust * weight), jnp.sum(weight))
        return metrics

    return jax.jit(step)


def evaluate(
    eval_step: EvalStep, params, split: Split, mesh: Mesh, config: mlc.ConfigDict, rng
) -> dict[str, float]:
    """Evaluates ``params`` on every example of ``split`` once; returns metric means
    (plus ``perplexity`` for token tasks)."""
    totals: dict[str, tuple] = {}
    for i, batch in enumerate(eval_batches(split, config.batch_size, config.max_examples)):
        sums = eval_step(params, to_global(batch, mesh), jax.random.fold_in(rng, i))
        totals = sums if not totals else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    results = {k: float(s / max(c, 1e-9)) for k, (s, c) in totals.items()}
    results["num_examples"] = float(totals["accuracy"][1]) if "accuracy" in totals else 0.0
    for prefix in ("", "attack_"):
        if f"{prefix}loss" in results:
            results[f"{prefix}perplexity"] = float(np.exp(min(results[f"{prefix}loss"], 50.0)))
    return results
