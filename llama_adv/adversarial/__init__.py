"""Adversarial layer: perturbation geometry, training methods, evaluation attacks.

Adding a method is one module under ``methods/``, one line in :data:`METHODS`, and tests.
"""

from __future__ import annotations

import ml_collections as mlc

from llama_adv.adversarial import geometry
from llama_adv.adversarial.base import (
    AUTO_NUMBER,
    AUTO_STRING,
    DROPOUT_MODES,
    BatchInfo,
    Method,
    Options,
)
from llama_adv.adversarial.methods.adaptive import BASES, Adaptive
from llama_adv.adversarial.methods.alum import ALUM
from llama_adv.adversarial.methods.clean import NoAdversary
from llama_adv.adversarial.methods.fgm import FGM
from llama_adv.adversarial.methods.fgm_vat import FGMVAT
from llama_adv.adversarial.methods.fgsm import FGSM
from llama_adv.adversarial.methods.freeat import FreeAT
from llama_adv.adversarial.methods.freelb import FreeLB
from llama_adv.adversarial.methods.neftune import NEFTune
from llama_adv.adversarial.methods.pgd import PGD
from llama_adv.adversarial.methods.r4f import R4F
from llama_adv.adversarial.methods.random import RandomPerturbation
from llama_adv.adversarial.methods.smart import SMART
from llama_adv.adversarial.methods.trades import TRADES
from llama_adv.adversarial.methods.vat import VAT
from llama_adv.errors import UserError
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
METHODS.register("r4f")(R4F)

# adv.radius_unit: radii and absolute step sizes in embedding units or times the RMS
# norm of the embedding rows (Xhonneux et al. 2024: eps = 0.05 x mean row norm)
RADIUS_UNITS = ("absolute", "embedding_rms")
# Methods whose ascent loop runs adv.steps times (VAT: power iterations).
ITERATIVE = ("pgd", "freelb", "smart", "vat", "fgm_vat", "alum", "trades")
# Methods whose only adversarial term is the divergence: weight_div 0 would make them clean.
DIVERGENCE_ONLY = ("random", "r4f", "vat", "alum", "trades")  # fgm_vat: either term will do
# Methods whose perturbation size is the radius itself, so "unbounded" means nothing.
NEED_RADIUS = ("fgm", "fgsm", "vat", "fgm_vat", "none", "random", "r4f")
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
}
# Methods whose every pass enters the loss: no attack pass that adv.dropout=eval could run
# deterministic.
NO_ATTACK_PASS = ("random", "r4f", "freelb", "freeat", "neftune")
# Common options a method never reads: setting one is an error, not a silent no-op.
IGNORED = {
    # the loss is the mean over ascent iterates of L(x + delta_t); the ascent maximises it
    "freelb": ("weight_clean", "weight_adv", "weight_div", "inner", "divergence"),
}


def _fail(field: str, message: str) -> UserError:
    return UserError(f"adv.{field} {message}")


def validate_adv_config(config: mlc.ConfigDict, streams: tuple[str, ...]) -> None:
    """Raises UserError naming the field of an inconsistent ``adv`` section."""
    factory = METHODS.get(config.method, field="adv.method")
    method = config.method
    for field, valid in CHOICES.items():
        if config[field] not in valid:
            raise _fail(field, f"must be one of {valid}, got {config[field]!r}.")
    if config.epsilon < 0:
        raise _fail("epsilon", f"must be >= 0 (a radius), got {config.epsilon}.")
    for field in ("weight_clean", "weight_adv", "weight_div", "init_magnitude", "step_size"):
        if config[field] < 0 and config[field] != -1:
            raise _fail(field, f"must be >= 0 (or -1 for the method default), got {config[field]}.")
    if config.steps < -1:
        raise _fail("steps", f"must be >= 1 (or -1 for the method default), got {config.steps}.")
    if method == "adaptive":
        _validate_sections(config)  # adaptive.base picks the defaults resolved below
    defaults = BASES[config.adaptive.base].defaults if method == "adaptive" else factory.defaults
    opt = Options.resolve(config, defaults)
    iterative = method in ITERATIVE or (method == "adaptive" and config.adaptive.base != "fgm")
    if iterative and opt.steps < 1:
        raise _fail("steps", f"must be >= 1 for the iterative method {method!r}, got {opt.steps}.")
    base = config.adaptive.base if method == "adaptive" else method
    for field in IGNORED.get(base, ()):
        if config[field] not in (AUTO_NUMBER, AUTO_STRING):
            raise _fail(
                field,
                f"is not used by {base!r} (its loss is the mean of the ascent iterates' "
                f"losses); leave it at its default, got {config[field]!r}.",
            )
    if config.dropout == "eval" and base in NO_ATTACK_PASS:
        raise _fail(
            "dropout",
            f"'eval' does not apply to {base!r}: its passes all enter the loss "
            "(no separate attack pass); use shared or fresh.",
        )
    if opt.init == "sphere" and method != "random":
        raise _fail("init", f"'sphere' is the random method's baseline, not for {method!r}.")
    perturbed_loss = method == "random" and opt.weight_adv > 0  # Miyato's random baseline
    if method in DIVERGENCE_ONLY and opt.weight_div <= 0 and not perturbed_loss:
        raise _fail("weight_div", f"must be > 0 for {method!r}: its divergence term is the method.")
    if config.begin_step < 0:
        raise _fail("begin_step", f"must be >= 0, got {config.begin_step}.")
    if config.radius_schedule == "linear" and config.radius_ramp_steps <= 0:
        raise _fail("radius_ramp_steps", "must be > 0 with adv.radius_schedule=linear.")
    if config.unbounded:
        if method in NEED_RADIUS or opt.projection == "sphere":
            raise _fail("unbounded", f"does not apply to {method!r} (its step is the radius).")
        if opt.step_size <= 0:
            raise _fail("step_size", "must be set (> 0) with adv.unbounded: 2.5 * eps / K is inf.")
    if any(int(t) < 0 for t in config.skip_token_ids):
        raise _fail("skip_token_ids", f"must be token ids >= 0, got {config.skip_token_ids}.")
    _validate_sections(config)
    select_streams(config.streams, streams)


def _validate_sections(config: mlc.ConfigDict) -> None:
    """The method-specific sub-sections (only the selected method's are checked)."""
    method = config.method
    if method == "freeat" and config.freeat.replays < 1:
        raise _fail("freeat.replays", f"must be >= 1, got {config.freeat.replays}.")
    if method in ("vat", "fgm_vat") and config.vat.xi <= 0:
        raise _fail("vat.xi", f"must be > 0, got {config.vat.xi}.")
    if method == "smart":
        s = config.smart
        for field in ("ema_early", "ema_late"):
            if not 0 <= s[field] <= 1:
                raise _fail(f"smart.{field}", f"must be in [0, 1], got {s[field]}.")
        if s.weight_breg < 0:
            raise _fail("smart.weight_breg", f"must be >= 0, got {s.weight_breg}.")
        if s.ema_switch_step < -1:
            raise _fail(
                "smart.ema_switch_step",
                f"must be >= 0 (or -1: 10% of training), got {s.ema_switch_step}.",
            )
    if method == "neftune" and not config.neftune.alpha >= 0:
        raise _fail("neftune.alpha", f"must be >= 0 (noise scale), got {config.neftune.alpha}.")
    if method == "adaptive":
        a = config.adaptive
        if a.base not in BASES:
            raise _fail("adaptive.base", f"must be one of {tuple(BASES)}, got {a.base!r}.")
        if a.rule not in ("one", "iaat"):
            raise _fail("adaptive.rule", f"must be 'one' or 'iaat', got {a.rule!r}.")
        if a.gamma < 0:
            raise _fail("adaptive.gamma", f"must be >= 0, got {a.gamma}.")
        if not 0 < a.smoothing <= 1:
            raise _fail("adaptive.smoothing", f"must be in (0, 1], got {a.smoothing}.")
        if not 0 <= a.eps_min <= a.eps_max:
            raise _fail("adaptive.eps_min", f"must satisfy 0 <= eps_min <= eps_max ({a.eps_max}).")


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


def build_method(config: mlc.ConfigDict, task: Task, num_steps: int = 0) -> Method:
    """Returns the method named by ``config.method`` (the ``adv`` section); ``num_steps``
    is ``train.num_steps`` (schedules given as a fraction of training need it)."""
    method = METHODS.get(config.method, field="adv.method")(config, task)
    method.num_steps = int(num_steps)
    extra = method.eval_cost()  # adv.dropout=eval: the attack's deterministic passes
    if any(extra):
        method.cost = tuple(a + b for a, b in zip(method.cost, extra, strict=True))
        method.passes = (method.passes[0] + extra[0], method.passes[1] + extra[1])
    return method


__all__ = ["METHODS", "BatchInfo", "Method", "build_method", "geometry", "validate_adv_config"]
