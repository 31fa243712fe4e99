"""Adversarial layer: perturbation geometry, training methods, evaluation attacks.

Adding a method is one module under ``methods/``, one line in :data:`METHODS`, and tests:
the method class describes itself (class attributes such as ``iterative``, ``uses``,
``defaults``; :meth:`Method.validate` for its sub-section), and :func:`build_method`
applies what every method shares (the delayed start of ``adv.begin_step``).
"""

from __future__ import annotations

import ml_collections as mlc

from llama_adv.adversarial import geometry, token_scope
from llama_adv.adversarial.base import (
    DROPOUT_MODES,
    BatchInfo,
    DelayedStart,
    Method,
    fail,
)
from llama_adv.adversarial.methods.adaptive import Adaptive
from llama_adv.adversarial.methods.alum import ALUM
from llama_adv.adversarial.methods.cat import CAT
from llama_adv.adversarial.methods.clean import NoAdversary
from llama_adv.adversarial.methods.fgm import FGM
from llama_adv.adversarial.methods.fgm_vat import FGMVAT
from llama_adv.adversarial.methods.fgsm import FGSM
from llama_adv.adversarial.methods.freeat import FreeAT
from llama_adv.adversarial.methods.freelb import FreeLB
from llama_adv.adversarial.methods.lat import LAT
from llama_adv.adversarial.methods.neftune import NEFTune
from llama_adv.adversarial.methods.pgd import PGD
from llama_adv.adversarial.methods.r4f import R4F
from llama_adv.adversarial.methods.random import RandomPerturbation
from llama_adv.adversarial.methods.smart import SMART
from llama_adv.adversarial.methods.trades import TRADES
from llama_adv.adversarial.methods.vat import VAT
from llama_adv.errors import UserError
from llama_adv.models.base import is_latent
from llama_adv.registry import Registry
from llama_adv.tasks import DIVERGENCES, Task

METHODS: Registry = Registry("adversarial method")
METHODS.register("none")(NoAdversary)
METHODS.register("random")(RandomPerturbation)
METHODS.register("fgsm")(FGSM)
METHODS.register("fgm")(FGM)
METHODS.register("pgd")(PGD)
METHODS.register("freeat")(FreeAT)
METHODS.register("freelb")(FreeLB)
METHODS.register("smart")(SMART)
METHODS.register("vat")(VAT)
METHODS.register("fgm_vat")(FGMVAT)
METHODS.register("alum")(ALUM)
METHODS.register("trades")(TRADES)
METHODS.register("adaptive")(Adaptive)
METHODS.register("neftune")(NEFTune)
METHODS.register("cat")(CAT)
METHODS.register("lat")(LAT)
METHODS.register("r4f")(R4F)

# adv.radius_unit: radii and absolute step sizes in embedding units or times the RMS
# norm of the embedding rows (Xhonneux et al. 2024: eps = 0.05 x mean row norm)
RADIUS_UNITS = ("absolute", "embedding_rms")
CHOICES = {
    "norm": ("",) + geometry.NORMS,
    "scope": ("",) + geometry.SCOPES,
    "projection": ("", "ball", "sphere"),
    "init": ("", "zero", "uniform", "normal", "sphere"),
    "inner": ("", "ce") + DIVERGENCES,
    "divergence": ("",) + DIVERGENCES,
    "radius_schedule": ("constant", "linear"),
    "dropout": ("",) + DROPOUT_MODES,
    "linf_step": ("",) + geometry.LINF_STEPS,
    "stream_geometry": geometry.STREAM_GEOMETRIES,
    "radius_unit": RADIUS_UNITS,
    "perturb_tokens": token_scope.PERTURB_TOKENS,
}


def validate_adv_config(
    config: mlc.ConfigDict, streams: tuple[str, ...], latent: tuple[str, ...] = ()
) -> None:
    """Raises UserError naming the field of an inconsistent ``adv`` section.

    ``streams`` are the model's embedding streams, ``latent`` its latent streams
    (``model.latent_streams``: ``layer:0`` ... ``layer:{depth - 1}``).

    The checks every method shares are here; the method's own (what its class attributes
    state and its ``adv.<name>`` sub-section) are its :meth:`Method.validate`.
    """
    factory = METHODS.get(config.method, field="adv.method")
    for field, valid in CHOICES.items():
        if config[field] not in valid:
            raise fail(field, f"must be one of {valid}, got {config[field]!r}.")
    if config.epsilon < 0:
        raise fail("epsilon", f"must be >= 0 (a radius), got {config.epsilon}.")
    for field in ("weight_clean", "weight_adv", "weight_div", "init_magnitude", "step_size"):
        if config[field] < 0 and config[field] != -1:
            raise fail(field, f"must be >= 0 (or -1 for the method default), got {config[field]}.")
    if config.steps < -1:
        raise fail("steps", f"must be >= 1 (or -1 for the method default), got {config.steps}.")
    if config.begin_step < 0:
        raise fail("begin_step", f"must be >= 0, got {config.begin_step}.")
    if config.radius_schedule == "linear" and config.radius_ramp_steps <= 0:
        raise fail("radius_ramp_steps", "must be > 0 with adv.radius_schedule=linear.")
    if any(int(t) < 0 for t in config.skip_token_ids):
        raise fail("skip_token_ids", f"must be token ids >= 0, got {config.skip_token_ids}.")
    factory.validate(config)
    select_streams(config.streams, streams, latent)


def select_streams(
    spec: str, streams: tuple[str, ...], latent: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """Parses ``adv.streams`` (``all`` or comma-separated names) against a model's streams.

    ``all`` is every embedding stream; latent streams (``layer:N``, after block ``N``) are
    only perturbed when named. A ``layer:`` entry outside ``latent`` raises a UserError
    naming it and the valid range.
    """
    if spec == "all":
        return streams
    chosen = tuple(s.strip() for s in spec.split(",") if s.strip())
    for name in chosen:
        if is_latent(name) and name not in latent:
            raise UserError(f"adv.streams={spec!r}: {name!r} {_latent_range(latent)}")
    unknown = [s for s in chosen if s not in streams + latent]
    if unknown or not chosen:
        raise UserError(
            f"adv.streams={spec!r} names streams this model does not have; "
            f"valid: all, {', '.join(streams)}, layer:N (the residual stream after block N)."
        )
    return tuple(dict.fromkeys(chosen))  # a stream named twice is perturbed once


def _latent_range(latent: tuple[str, ...]) -> str:
    if not latent:
        return "is not a residual stream: this model has no latent streams."
    return (
        f"is not a residual stream of this model; valid: layer:0 to layer:{len(latent) - 1} "
        f"(the output of block N, 0-based, of its {len(latent)} blocks; the encoder's on an "
        "encoder-decoder)."
    )


def build_method(config: mlc.ConfigDict, task: Task, num_steps: int = 0) -> Method | DelayedStart:
    """Returns the method named by ``config.method`` (the ``adv`` section); ``num_steps``
    is ``train.num_steps`` (schedules given as a fraction of training need it). With
    ``adv.begin_step > 0`` the method is wrapped in :class:`DelayedStart` (clean training
    before that step)."""
    method = METHODS.get(config.method, field="adv.method")(config, task, num_steps)
    extra = method.eval_cost()  # adv.dropout=eval: the attack's deterministic passes
    if any(extra):
        method.cost = tuple(a + b for a, b in zip(method.cost, extra, strict=True))
        method.passes = (method.passes[0] + extra[0], method.passes[1] + extra[1])
    begin = int(config.get("begin_step", 0))
    if begin > 0 and not isinstance(method, NoAdversary):
        return DelayedStart(method, NoAdversary(config, task, num_steps), begin)
    return method


__all__ = [
    "METHODS",
    "BatchInfo",
    "DelayedStart",
    "Method",
    "build_method",
    "geometry",
    "validate_adv_config",
]
