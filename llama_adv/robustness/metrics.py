"""TextAttack's robustness metrics from per-example outcomes.

An example the model gets wrong before the attack is *skipped*; of the others, the attack
*succeeds* when the prediction is wrong afterwards and *fails* otherwise.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Outcomes:
    """Per-example outcomes of one attack, all ``[N]``.

    clean_correct / adv_correct: bool, prediction right before / after the attack.
    perturbed: fraction of the example's words (or tokens) the attack changed.
    queries: model evaluations the attack spent on the example.
    """

    clean_correct: np.ndarray
    adv_correct: np.ndarray
    perturbed: np.ndarray
    queries: np.ndarray

    @classmethod
    def concat(cls, parts: list[Outcomes]) -> Outcomes:
        return cls(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls))
        )


def summarize(o: Outcomes) -> dict[str, float]:
    """Clean accuracy, accuracy under attack, success rate and costs.

    Accuracy under attack counts an example as correct only if it is correct both before and
    after (a skipped example is never attacked), so it never exceeds clean accuracy. Perturbed
    % and queries are averaged over attacked (not skipped) examples, as TextAttack does.
    """
    clean = o.clean_correct.astype(bool)
    robust = clean & o.adv_correct.astype(bool)
    n = len(clean)
    successful = int(np.sum(clean & ~robust))
    failed = int(np.sum(robust))
    attacked = successful + failed
    return {
        "num_examples": n,
        "successful": successful,
        "failed": failed,
        "skipped": n - attacked,
        "clean_accuracy": float(np.mean(clean)) if n else 0.0,
        "accuracy_under_attack": float(np.mean(robust)) if n else 0.0,
        "attack_success_rate": successful / attacked if attacked else 0.0,
        "avg_perturbed_percent": 100.0 * float(np.mean(o.perturbed[clean])) if attacked else 0.0,
        "avg_queries": float(np.mean(o.queries[clean])) if attacked else 0.0,
    }
