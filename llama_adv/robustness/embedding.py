"""Embedding-space attacks (PGD-K and FGM, L2 and L-inf) over a grid of radii.

One jitted step per attack and batch shape; the radius is a traced argument, so the whole
curve costs one compilation per attack. Reuses ``train.evaluate.attack_embeddings`` and
the pure attacks of ``adversarial.attacks``.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from llama_adv.data.base import Split
from llama_adv.data.pipeline import eval_batches
from llama_adv.models import Model
from llama_adv.tasks import Task
from llama_adv.train.evaluate import attack_embeddings
from llama_adv.train.mesh import to_global

FIELDS = ("clean_correct", "adv_correct", "clean_loss", "adv_loss", "denominator", "weight")


def parse_attack(name: str) -> tuple[str, str]:
    """``"pgd_l2"`` -> ``("pgd", "l2")``."""
    method, _, norm = name.partition("_")
    if method not in ("pgd", "fgm") or norm not in ("l2", "linf"):
        raise ValueError(f"unknown embedding attack {name!r}; use pgd|fgm _ l2|linf")
    return method, norm


def make_attack_step(
    model: Model, task: Task, *, method: str, norm: str, scope: str, steps: int, step_size: float
) -> Callable:
    """``step(params, batch, rng, epsilon) -> {field: [B]}`` per-example outcomes (FIELDS).

    ``step_size`` 0 means ``2.5 * epsilon / steps``; dropout is off.
    """

    def step(params, batch, rng, epsilon):
        attack = types.SimpleNamespace(
            method=method,
            epsilon=epsilon,
            norm=norm,
            scope=scope,
            steps=steps,
            step_size=step_size,
        )
        clean = model.apply(params, batch, deterministic=True)
        adv = attack_embeddings(model, task, params, batch, rng, attack)
        return {
            "clean_correct": task.correct(clean, batch),
            "adv_correct": task.correct(adv, batch),
            "clean_loss": task.loss(clean, batch),
            "adv_loss": task.loss(adv, batch),
            "denominator": task.denominator(batch),
            "weight": batch["weight"].astype(jnp.float32),
        }

    return jax.jit(step)


def aggregate(outcomes: dict[str, np.ndarray], token_task: bool) -> dict[str, float]:
    """Exact split-level metrics from concatenated per-example outcomes."""
    w = outcomes["weight"]
    n = max(float(np.sum(w)), 1e-9)
    robust = np.minimum(outcomes["clean_correct"], outcomes["adv_correct"])
    out = {
        "clean_accuracy": float(np.sum(outcomes["clean_correct"] * w) / n),
        # TextAttack: right before and after; never above clean accuracy.
        "accuracy": float(np.sum(robust * w) / n),
    }
    denom = max(float(np.sum(outcomes["denominator"])), 1e-9)
    out["clean_loss"] = float(np.sum(outcomes["clean_loss"]) / denom)
    out["loss"] = float(np.sum(outcomes["adv_loss"]) / denom)
    if token_task:
        out["clean_perplexity"] = float(np.exp(min(out["clean_loss"], 50.0)))
        out["perplexity"] = float(np.exp(min(out["loss"], 50.0)))
    return out


def embedding_curve(
    step: Callable,
    params,
    split: Split,
    mesh: Mesh,
    *,
    epsilons: Sequence[float],
    batch_size: int,
    limit: int,
    rng: jax.Array,
    token_task: bool,
    progress=None,
) -> list[dict[str, float]]:
    """Metrics at each radius, over the first ``limit`` examples (0 = all) of ``split``."""
    batches = [to_global(b, mesh) for b in eval_batches(split, batch_size, limit)]
    results = []
    for r, epsilon in enumerate(epsilons):
        parts = []
        for i, batch in enumerate(batches):
            key = jax.random.fold_in(jax.random.fold_in(rng, r), i)
            parts.append(step(params, batch, key, jnp.float32(epsilon)))
            if progress is not None:
                progress.update(int(np.sum(np.asarray(batch["weight"]))))
        outcomes = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in FIELDS}
        results.append({"epsilon": float(epsilon), **aggregate(outcomes, token_task)})
    return results
