"""Adversarial layer: perturbation geometry, training methods, evaluation attacks.

Adding a method is one module under ``methods/``, one line in :data:`METHODS`, and tests.
"""

from __future__ import annotations

import ml_collections as mlc

from llama_adv.adversarial import geometry
from llama_adv.adversarial.base import BatchInfo, Method
from llama_adv.adversarial.methods.clean import NoAdversary
from llama_adv.adversarial.methods.fgm import FGM
from llama_adv.errors import UserError
from llama_adv.registry import Registry
from llama_adv.tasks import Task

METHODS: Registry = Registry("adversarial method")
METHODS.register("none")(NoAdversary)
METHODS.register("fgm")(FGM)


def validate_adv_config(config: mlc.ConfigDict, streams: tuple[str, ...]) -> None:
    """Raises UserError naming the field of an inconsistent ``adv`` section."""
    METHODS.get(config.method, field="adv.method")
    if config.epsilon < 0:
        raise UserError(f"adv.epsilon must be >= 0, got {config.epsilon}.")
    if config.norm not in geometry.NORMS:
        raise UserError(f"adv.norm must be one of {geometry.NORMS}, got {config.norm!r}.")
    if config.scope not in geometry.SCOPES:
        raise UserError(f"adv.scope must be one of {geometry.SCOPES}, got {config.scope!r}.")
    if config.begin_step < 0:
        raise UserError(f"adv.begin_step must be >= 0, got {config.begin_step}.")
    select_streams(config.streams, streams)


def select_streams(spec: str, streams: tuple[str, ...]) -> tuple[str, ...]:
    """Parses ``adv.streams`` (``all`` or comma-separated names) against a model's streams."""
    if spec == "all":
        return streams
    chosen = tuple(s.strip() for s in spec.split(",") if s.strip())
    unknown = [s for s in chosen if s not in streams]
    if unknown or not chosen:
        raise UserError(
            f"adv.streams={spec!r} names streams this model does not have; "
            f"valid: all, {', '.join(streams)}."
        )
    return chosen


def build_method(config: mlc.ConfigDict, task: Task) -> Method:
    """Returns the method named by ``config.method`` (the ``adv`` section)."""
    return METHODS.get(config.method, field="adv.method")(config, task)


__all__ = ["METHODS", "BatchInfo", "Method", "build_method", "geometry", "validate_adv_config"]
