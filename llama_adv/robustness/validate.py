"""Type and range checks of the ``robustness`` config section, run before anything is built
or written. Light on purpose (no JAX): the train config validator calls it too."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llama_adv.errors import UserError
from llama_adv.robustness.noise import NOISES

# Named suites -> attack families. An adversarial set (robustness.adv_set or --adv-set) is
# evaluated with every suite; "advset" evaluates it alone.
SUITES = {
    "default": ("embedding", "hotflip", "deepwordbug", "noise", "adv_set"),
    "embedding": ("embedding",),
    "discrete": ("hotflip", "deepwordbug", "noise", "adv_set"),
    "noise": ("noise",),
    "advset": ("adv_set",),
    "generation": ("generation",),  # chat/lm runs: GCG and the embedding attack on replies
}
EMBEDDING_ATTACKS = ("pgd_l2", "pgd_linf", "fgm_l2", "fgm_linf")
DISCRETE_ATTACKS = ("hotflip", "deepwordbug")
SCOPES = ("example", "token")
RADIUS_UNITS = ("absolute", "embedding_rms")


def _field(name: str) -> str:
    return f"robustness.{name}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(section: Mapping, name: str, low: int) -> None:
    value = section[name]
    if not _is_int(value) or value < low:
        raise UserError(f"{_field(name)} must be an integer >= {low}, got {value!r}.")


def _number(section: Mapping, name: str, low: float, high: float | None = None) -> float:
    value = section[name]
    ok = _is_number(value) and value >= low and (high is None or value <= high)
    if not ok:
        where = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise UserError(f"{_field(name)} must be a number {where}, got {value!r}.")
    return float(value)


def _sequence(section: Mapping, name: str) -> tuple:
    value = section[name]
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise UserError(f"{_field(name)} must be a tuple, e.g. ({value!r},), got {value!r}.")
    return tuple(value)


def _names(section: Mapping, name: str, valid: tuple[str, ...]) -> tuple[str, ...]:
    values = _sequence(section, name)
    for v in values:
        if v not in valid:
            raise UserError(
                f"{_field(name)} has unknown entry {v!r}; valid: {', '.join(valid)} (() = none)."
            )
    return values


def _radii(section: Mapping, name: str, high: float | None = None) -> tuple[float, ...]:
    values = _sequence(section, name)
    for v in values:
        if not _is_number(v) or v < 0 or (high is not None and v > high):
            what = f"numbers in [0, {high:g}]" if high is not None else "non-negative numbers"
            raise UserError(f"{_field(name)} must hold {what}, got {v!r} in {values!r}.")
    return values


def _choice(section: Mapping, name: str, valid: tuple[str, ...] | dict) -> None:
    value = section[name]
    if not isinstance(value, str) or value not in valid:
        raise UserError(f"{_field(name)}={value!r} is unknown; valid: {', '.join(valid)}.")


def _string(section: Mapping, name: str, empty: bool = True) -> None:
    value = section[name]
    if not isinstance(value, str) or (not empty and not value):
        raise UserError(f"{_field(name)} must be a non-empty string, got {value!r}.")


def validate_robustness_config(section: Mapping) -> None:
    """Checks every field of a ``robustness`` config section (a ConfigDict or a dict with the
    keys of ``llama_adv.config.defaults.robustness_defaults``).

    Raises:
      UserError: one line naming the first bad field and its valid values.
    """
    _choice(section, "suite", SUITES)
    attacks = _names(section, "embedding_attacks", EMBEDDING_ATTACKS)
    for name, norm in (("epsilons", "l2"), ("linf_epsilons", "linf")):
        radii = _radii(section, name)
        users = [a for a in attacks if a.endswith(f"_{norm}")]
        if users and not radii:
            raise UserError(
                f"{_field(name)} is empty but robustness.embedding_attacks lists "
                f"{', '.join(users)}; give at least one radius, e.g. (0.0, 0.5)."
            )
    _int(section, "limit", 0)
    _string(section, "split")
    _int(section, "batch_size", 1)
    _int(section, "seed", 0)
    _choice(section, "scope", SCOPES)
    _choice(section, "radius_unit", RADIUS_UNITS)
    _int(section, "pgd_steps", 1)
    _number(section, "pgd_step_size", 0.0)
    if not isinstance(section["bleu"], bool):
        raise UserError(f"robustness.bleu must be True or False, got {section['bleu']!r}.")
    _names(section, "discrete_attacks", DISCRETE_ATTACKS)
    budget = section["sub_budget"]
    if not _is_number(budget) or not 0 < budget <= 1:
        raise UserError(
            "robustness.sub_budget must be a number in (0, 1] (the fraction of a text's tokens "
            f"HotFlip may change), got {budget!r}; to skip HotFlip, drop it from "
            "robustness.discrete_attacks."
        )
    _int(section, "sub_neighbors", 1)
    _int(section, "sub_candidates", 1)
    _int(section, "char_budget", 1)
    noise = _names(section, "noise", NOISES)
    rates = _radii(section, "noise_rates", high=1.0)
    if noise and not rates:
        raise UserError(
            "robustness.noise_rates is empty but robustness.noise lists "
            f"{', '.join(noise)}; give at least one rate in [0, 1], e.g. (0.1,)."
        )
    _string(section, "adv_set")
    _string(section, "adv_task", empty=False)
    _int(section, "num_saved_examples", 0)


def require_adv_set(section: Mapping) -> None:
    """At attack time: ``suite=advset`` needs a set. (Not part of the section's own checks: a
    training config may leave the set to ``llama-adv robustness --adv-set``.)"""
    if section["suite"] == "advset" and not section["adv_set"]:
        raise UserError(
            "robustness.suite=advset evaluates an adversarial set alone; give one with "
            "--adv-set FILE or robustness.adv_set=FILE (AdvGLUE .json or text<TAB>label .tsv)."
        )
