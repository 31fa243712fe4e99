"""Embedding-space attacks used at evaluation (and by the robustness suite).

They run the training methods' own engine: :class:`~llama_adv.adversarial.base.Options`
resolved against the ``pgd`` and ``fgm`` methods' defaults, the start, ascent step,
projection and step-size rule of :mod:`~llama_adv.adversarial.ascent`, and the geometry of
:mod:`~llama_adv.adversarial.geometry`. An evaluation PGD attack is the ``pgd`` training
method's inner loop with its dropout off (``adv.dropout = eval``), given the start key.

Each attack is a pure function of a loss function of the perturbation, ``loss_fn(delta) ->
[B]`` per-example losses (a deterministic pass): it maximises each example's loss inside
its own ball.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from llama_adv.adversarial import ascent
from llama_adv.adversarial.base import Delta, Options
from llama_adv.adversarial.methods.fgm import FGM
from llama_adv.adversarial.methods.pgd import PGD

LossFn = Callable[[Delta], jax.Array]
METHODS = ("pgd", "fgm")


def _inner(loss_fn: LossFn) -> ascent.InnerLoss:
    """``loss_fn`` as an ascent objective ``(delta, rng) -> [B]`` (its passes are
    deterministic: the dropout key is not used)."""
    return lambda delta, rng: loss_fn(delta)


def _deterministic(t: jax.Array) -> None:
    return None


def attack_options(
    method: str,
    *,
    norm: str,
    scope: str,
    steps: int = 1,
    step_size: float = 0.0,
    random_start: bool = True,
    stream_geometry: str = "joint",
) -> Options:
    """The :class:`Options` of an evaluation attack, resolved as the training method
    ``method`` (``pgd`` or ``fgm``) resolves its ``adv`` section: the fields given here,
    the rest (``linf_step = sign``, ``projection = ball``, PGD's init magnitude = the
    radius) the method's defaults.

    Args:
      steps, step_size, random_start: PGD only (FGM is one step of the radius from zero);
        ``step_size`` (a Python float) 0: :func:`ascent.default_step_size`;
        ``random_start``: the ``uniform`` start (else ``zero``).
    """
    fields = {"norm": norm, "scope": scope, "stream_geometry": stream_geometry, "inner": "ce"}
    if method == "pgd":
        fields.update(steps=steps, step_size=step_size, init="uniform" if random_start else "zero")
        return Options.resolve(fields, PGD.defaults)
    if method == "fgm":
        return Options.resolve(fields, FGM.defaults)
    raise ValueError(f"unknown embedding attack method {method!r}; valid: {METHODS}")


@dataclasses.dataclass(frozen=True)
class EmbeddingAttack:
    """An evaluation attack: ``method`` (``pgd`` or ``fgm``) and its resolved options.

    ``attack(loss_fn, masks, shapes, rng, epsilon, unit=1.0)`` returns the perturbation
    ``{stream: [B, L, D]}``, inside the ``epsilon`` ball (scalar or ``[B]``, absolute; it
    bounds all streams together under ``stream_geometry = joint``, the default, as in
    training) and zero on masked positions; ``rng`` is PGD's start key (FGM ignores it);
    ``unit`` multiplies a set PGD step size (the radius unit, as in training).
    """

    method: str
    opt: Options

    @classmethod
    def build(cls, method: str, **options) -> EmbeddingAttack:
        """``options``: the keywords of :func:`attack_options`."""
        return cls(method, attack_options(method, **options))

    @classmethod
    def from_config(cls, config) -> EmbeddingAttack:
        """From an ``eval.attack`` section (``method`` pgd|fgm, ``norm``, ``scope``,
        ``steps``, ``step_size``; ``epsilon`` is the caller's)."""
        return cls.build(
            config.method,
            norm=config.norm,
            scope=config.scope,
            steps=config.steps,
            step_size=config.step_size,
        )

    def __call__(self, loss_fn: LossFn, masks, shapes, rng, epsilon, unit=1.0) -> Delta:
        if self.method == "fgm":
            return fgm(loss_fn, masks, shapes, self.opt, epsilon)
        return pgd(loss_fn, masks, shapes, rng, self.opt, epsilon, unit)


def fgm(loss_fn: LossFn, masks, shapes, opt: Options, epsilon) -> Delta:
    """One normalised ascent step of size ``epsilon`` from zero, projected onto the
    ``epsilon`` ball (FGM; FGSM for L-inf): :func:`ascent.step` at the gradient of
    :func:`ascent.grad`."""
    zeros = {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}
    grads = ascent.grad(_inner(loss_fn), zeros, None)
    return ascent.step(zeros, grads, masks, opt, epsilon, epsilon)


def pgd(loss_fn: LossFn, masks, shapes, rng: jax.Array, opt: Options, epsilon, unit=1.0) -> Delta:
    """:func:`ascent.pgd` with ``rng`` as the start key and every pass deterministic, at
    ``opt.step_size`` times ``unit`` or :func:`ascent.default_step_size`."""
    return ascent.pgd(
        _inner(loss_fn),
        rng,
        masks,
        shapes,
        opt,
        radius=epsilon,
        step_size=ascent.step_size(opt, epsilon, unit),
        rng_at=_deterministic,
    )


def fgm_attack(
    loss_fn: LossFn, masks, shapes, *, epsilon, norm: str, scope: str, stream_geometry="joint"
) -> Delta:
    """:func:`fgm` with the options given as keywords (see :func:`attack_options`)."""
    opt = attack_options("fgm", norm=norm, scope=scope, stream_geometry=stream_geometry)
    return fgm(loss_fn, masks, shapes, opt, epsilon)


def pgd_attack(
    loss_fn: LossFn,
    masks,
    shapes,
    rng: jax.Array,
    *,
    epsilon,
    steps: int,
    step_size,
    norm: str,
    scope: str,
    random_start: bool = True,
    stream_geometry: str = "joint",
) -> Delta:
    """:func:`pgd` with the options given as keywords: ``steps`` steps of ``step_size``
    (0: :func:`ascent.default_step_size`) inside the ``epsilon`` ball.

    Args:
      loss_fn: ``delta -> [B]`` per-example loss to maximise.
      masks: ``{stream: [B, L]}``; shapes: ``{stream: (B, L, D)}``.
      epsilon: scalar or ``[B]`` radius; it bounds all streams together under
        ``stream_geometry = joint`` (the default, as in training), each under
        ``per_stream``.

    Returns:
      ``{stream: [B, L, D]}``, inside the ball and zero on masked positions.
    """
    opt = attack_options(
        "pgd",
        norm=norm,
        scope=scope,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        stream_geometry=stream_geometry,
    )
    return pgd(loss_fn, masks, shapes, rng, opt, epsilon)
