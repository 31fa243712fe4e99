"""The method interface and the per-batch context the train step gives a method.

A method sees only an ``objective`` closed over one batch,

    objective(params, delta, rng) -> (per_example_loss [B], outputs)

where ``delta`` is ``{stream: [B, L, D]}`` for the perturbed streams (missing streams are
unperturbed) and ``rng`` the pass's dropout key (``None``: a deterministic, eval-mode
pass; a keyword ``detach_embeddings=True`` stops this pass's gradient into the embedding
table), plus a :class:`BatchInfo`. It returns parameter gradients and metrics. It
knows nothing of models, devices or datasets.

Options shared by all methods (``adv.steps``, ``adv.norm``, loss weights, ...) use a
sentinel (-1 or "") for "this method's default"; :class:`Options` resolves them once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections as mlc

from llama_adv.adversarial import ascent, geometry, token_scope
from llama_adv.errors import UserError
from llama_adv.tasks import Task

Params = Any
Delta = dict[str, jax.Array]
Objective = Callable[[Params, Delta, jax.Array], tuple[jax.Array, dict]]
# descend(params, opt_state, grads) -> (params, opt_state, grad_norm): all-reduce + optimizer
Descend = Callable[[Params, Any, Params], tuple[Params, Any, jax.Array]]


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    """What a method may know about the current batch (all arrays are per-device shards).

    Attributes:
      masks: ``{stream: [B, L] float32}`` for the perturbed streams only.
      shapes: ``{stream: (B, L, D)}`` embedding shapes of those streams.
      batch: the device's shard of the batch (labels, example ids, weights).
      denominator: global (all devices) sum of the task's per-example denominators.
      step: the optimizer step being computed (scalar int array).
      axis_name: the data-parallel mesh axis, for collectives over devices.
      div_denominator: global sum of the task's divergence denominators (unlabelled
        examples count); ``None``: ``denominator``.
      tokens: ``{stream: [B, L] int}``, the token ids behind the perturbed streams
        (``model.stream_tokens(batch)``), for ``adv.skip_token_ids``.
      embedding_rms: scalar RMS L2 norm of the embedding rows of the current parameters
        (``model.embedding_rms(params)``, no gradient), the unit of
        ``adv.radius_unit = embedding_rms``.
      embedding_norm: scalar mean L2 norm of the embedding rows, ``mean_i ||E_i||`` (no
        gradient), the unit of CAT's radius.
      rows: ``[B]`` int, the examples' rows in the step's whole batch; random draws are
        per row (:func:`geometry.example_noise`), so a microbatch (``train.microbatches``)
        draws what its examples draw in the whole batch. None: ``0..B-1``.
      step_batch: under ``train.microbatches``, the step's whole batch (``batch`` is one
        microbatch of it); None: ``batch``. Denominators are sums over it
        (:attr:`whole_batch`), so microbatches' gradients add up to the batch's.
    """

    masks: dict[str, jax.Array]
    shapes: dict[str, tuple[int, ...]]
    batch: dict[str, jax.Array]
    denominator: jax.Array
    step: jax.Array
    axis_name: str | None = "data"
    div_denominator: jax.Array | None = None
    tokens: dict[str, jax.Array] | None = None
    embedding_rms: jax.Array | None = None
    embedding_norm: jax.Array | None = None
    rows: jax.Array | None = None
    step_batch: dict[str, jax.Array] | None = None

    @property
    def whole_batch(self) -> dict[str, jax.Array]:
        """The step's whole batch, for denominators (``batch`` outside microbatches)."""
        return self.batch if self.step_batch is None else self.step_batch

    def zeros(self) -> Delta:
        """A zero perturbation for every perturbed stream."""
        return {k: jnp.zeros(s, jnp.float32) for k, s in self.shapes.items()}

    def local_mean(self, per_example: jax.Array) -> jax.Array:
        """This device's share of the global batch mean: ``sum(x) / global denominator``.

        Differentiate this; the train step sums gradients over devices. A batch with no
        labelled example (denominator 0) contributes 0, never NaN.
        """
        return jnp.sum(per_example) / jnp.maximum(self.denominator, 1e-9)

    def local_div_mean(self, per_example: jax.Array) -> jax.Array:
        """Like :meth:`local_mean` for divergence terms, over every example that has one."""
        denominator = self.denominator if self.div_denominator is None else self.div_denominator
        return jnp.sum(per_example) / jnp.maximum(denominator, 1e-9)

    def psum(self, x: jax.Array) -> jax.Array:
        return jax.lax.psum(x, self.axis_name) if self.axis_name else x

    def global_mean(self, per_example: jax.Array) -> jax.Array:
        """The global batch mean of a per-example quantity (for metrics)."""
        return self.psum(self.local_mean(per_example))

    def global_example_mean(self, per_example: jax.Array) -> jax.Array:
        """Mean over real examples (weight > 0) of the global batch, e.g. norms, flip rate."""
        weight = (self.batch["weight"] > 0).astype(jnp.float32)
        return self.psum(jnp.sum(per_example * weight)) / jnp.maximum(
            self.psum(jnp.sum(weight)), 1.0
        )

    def global_max(self, x: jax.Array) -> jax.Array:
        x = jnp.max(x)
        return jax.lax.pmax(x, self.axis_name) if self.axis_name else x


def perturbation_norms(delta: Delta, kind: str) -> jax.Array:
    """Per-example norm ``[B]`` of a multi-stream perturbation (streams concatenated)."""
    if kind == "linf":
        return jnp.max(jnp.stack([geometry.norm(d, "linf", "example") for d in delta.values()]), 0)
    squares = [geometry.norm(d, "l2", "example") ** 2 for d in delta.values()]
    return jnp.sqrt(sum(squares))


def fail(field: str, message: str) -> UserError:
    """The error of a bad ``adv.<field>``."""
    return UserError(f"adv.{field} {message}")


# Sentinels meaning "the method's own default" in the ``adv`` config section.
AUTO_NUMBER, AUTO_STRING = -1, ""
# Options every method resolves against its ``defaults``; the fallback is the last column.
COMMON = {
    "weight_clean": 1.0,
    "weight_adv": 1.0,
    "weight_div": 0.0,
    "steps": 1,
    "step_size": 0.0,  # 0 after resolution: the method computes one from the radius
    "init": "zero",
    "init_magnitude": 0.0,
    "norm": "l2",
    "scope": "example",
    "inner": "ce",
    "divergence": "symmetric_kl",
    "projection": "ball",
    "linf_step": "sign",
    "stream_geometry": "joint",  # the radius bounds all perturbed streams together
}
# The common options whose sentinel means "the method's default": a method lists in
# ``Method.uses`` those it reads; setting one it does not read is a config error.
METHOD_OPTIONS = tuple(name for name in COMMON if name != "stream_geometry")
# adv.dropout: how an update's forward passes draw their dropout masks ("" = the method's).
DROPOUT_MODES = ("shared", "fresh", "eval")
# Folded into an update's key for the perturbation's random start (dropout keys use the
# key itself or small indices), so noise and dropout never share a stream.
NOISE_STREAM = 0x6E6F6973


@dataclasses.dataclass(frozen=True)
class Options:
    """The resolved common options of one method (sentinels replaced by its defaults)."""

    weight_clean: float
    weight_adv: float
    weight_div: float
    steps: int
    step_size: float
    init: str
    init_magnitude: float
    norm: str
    scope: str
    inner: str
    divergence: str
    projection: str
    linf_step: str
    stream_geometry: str = "joint"

    @classmethod
    def resolve(cls, config: mlc.ConfigDict, defaults: dict[str, Any]) -> Options:
        values = {}
        for name, fallback in COMMON.items():
            value = config.get(name, AUTO_NUMBER)
            if value in (AUTO_NUMBER, AUTO_STRING):
                value = defaults.get(name, fallback)
            values[name] = value
        return cls(**values)


class Method:
    """Base class: subclasses implement :meth:`grads` (one optimizer step per batch) or
    override :meth:`update` (FreeAT-style several steps per batch).

    Attributes:
      passes: (forward, backward) passes per update as METHODS.md counts them (a backward
        through several joined forwards counts once), clean training = (1, 1).
      cost: (forwards, input-only backwards, parameter backwards), each counted per
        forward graph it runs through; :meth:`theoretical_ratio` weighs them 1, 1 and 2
        (a backward that also yields parameter gradients costs about two forwards).
      defaults: this method's values for the common options left at their sentinel.
      default_dropout: ``adv.dropout`` when left at "": ``shared`` (one dropout key for
        every pass of an update), ``fresh`` (a new key per forward pass) or ``eval`` (the
        attack's passes deterministic, the loss passes fresh).
      num_steps: ``train.num_steps`` (schedules given as a fraction of training need it).

    What the config validation (:meth:`validate`) knows of a method, it reads from the
    class attributes below and from :meth:`validate` itself (a subclass extends it with
    the checks of its ``adv.<name>`` sub-section); nothing outside the class lists methods.
    """

    #: its ascent loop runs ``adv.steps`` times (VAT: power iterations): steps >= 1
    iterative: ClassVar[bool] = False
    #: its perturbation's size is the radius itself: ``adv.unbounded`` means nothing
    needs_radius: ClassVar[bool] = False
    #: its only adversarial term is the divergence: ``adv.weight_div`` must be > 0
    divergence_only: ClassVar[bool] = False
    #: it has passes that only move ``delta`` (so ``adv.dropout = eval`` can run them
    #: deterministic); False when every pass enters the loss
    attack_pass: ClassVar[bool] = True
    #: Miyato et al.'s random baseline: ``adv.init = sphere`` is allowed, and with
    #: ``adv.weight_adv > 0`` the divergence may be off (``random`` only)
    miyato_baseline: ClassVar[bool] = False
    #: the options of :data:`METHOD_OPTIONS` it reads; one outside set to a non-default
    #: value is an error naming the field and the method (unless ``refuse_unused`` is off)
    uses: ClassVar[frozenset[str]] = frozenset()
    refuse_unused: ClassVar[bool] = True
    #: appended to the "is not used by" error (why the method has no use for the option)
    unused_reason: ClassVar[str] = ""
    #: why ``train.microbatches > 1`` is refused; "" when the update is :meth:`grads`
    #: (a sum of per-example terms, so microbatches' gradients add up to the batch's),
    #: then one descent and :meth:`after_descend`
    microbatch_refusal: ClassVar[str] = ""

    passes: tuple[float, float] = (1, 1)
    updates_per_batch: int = 1  # optimizer updates per batch (FreeAT: m); the lr schedule
    # spans train.num_steps * updates_per_batch updates
    cost: tuple[float, float, float] = (1, 0, 1)
    defaults: ClassVar[dict[str, Any]] = {}
    default_dropout: ClassVar[str] = "fresh"

    def __init__(self, config: mlc.ConfigDict, task: Task, num_steps: int = 0):
        self.config = config
        self.task = task
        self.num_steps = int(num_steps)
        self.opt = Options.resolve(config, self.defaults)
        self.dropout = config.get("dropout", "") or self.default_dropout

    # ------------------------------------------------------------------- validation
    @classmethod
    def validate(cls, config: mlc.ConfigDict) -> None:
        """Raises UserError naming the field of an ``adv`` section this method cannot run.

        The base checks what the class attributes state (:meth:`check_common`); a method
        with an ``adv.<name>`` sub-section extends this with the checks of its fields.
        """
        cls.check_common(config)

    @classmethod
    def check_common(
        cls, config: mlc.ConfigDict, attack: type[Method] | None = None, label: str = ""
    ) -> None:
        """The rules the class attributes state.

        Args:
          attack: the class whose attack and loss run (``adaptive``: its base): its
            defaults, ``iterative``, ``uses`` and ``attack_pass`` apply; the rest are this
            class's.
          label: the method as error messages name it (default: ``adv.method``).
        """
        attack = cls if attack is None else attack
        label = label or repr(config.method)
        opt = Options.resolve(config, attack.defaults)
        if attack.iterative and opt.steps < 1:
            raise fail("steps", f"must be >= 1 for the iterative method {label}, got {opt.steps}.")
        if attack.refuse_unused:
            for field in METHOD_OPTIONS:
                value = config.get(field, AUTO_NUMBER)
                if field not in attack.uses and value not in (AUTO_NUMBER, AUTO_STRING):
                    default = AUTO_STRING if isinstance(COMMON[field], str) else AUTO_NUMBER
                    raise fail(
                        field,
                        f"is not used by {label}{attack.unused_reason}; leave it at its "
                        f"default ({default!r}), got {value!r}.",
                    )
        if config.get("dropout", "") == "eval" and not attack.attack_pass:
            raise fail(
                "dropout",
                f"'eval' does not apply to {label}: its passes all enter the loss "
                "(no separate attack pass); use shared or fresh.",
            )
        if opt.init == "sphere" and not cls.miyato_baseline:
            raise fail("init", f"'sphere' is the random method's baseline, not for {label}.")
        perturbed_loss = cls.miyato_baseline and opt.weight_adv > 0  # L(x) + L(x + r)
        if cls.divergence_only and opt.weight_div <= 0 and not perturbed_loss:
            raise fail("weight_div", f"must be > 0 for {label}: its divergence term is the method.")
        if config.get("unbounded", False):
            if cls.needs_radius or opt.projection == "sphere":
                raise fail("unbounded", f"does not apply to {label} (its step is the radius).")
            if opt.step_size <= 0:
                raise fail(
                    "step_size", "must be set (> 0) with adv.unbounded: 2.5 * eps / K is inf."
                )

    @classmethod
    def required_task(cls, config: mlc.ConfigDict) -> str | None:
        """The ``task.name`` this method needs under the ``adv`` section ``config`` (the
        chat methods' harmful rows and away targets), or None for any task."""
        return None

    # ----------------------------------------------------------------- state and cost
    def init_state(
        self, params: Params, num_examples: int, batch_shapes: dict | None = None
    ) -> Any:
        """Method state kept in the train state (checkpointed); ``{}`` if none.

        Args:
          params: the initial parameters.
          num_examples: training examples (per-example state is indexed by example id).
          batch_shapes: ``{stream: (global B, max L, D)}``, the embeddings of the largest
            training batch (state carried from batch to batch).
        """
        return {}

    def theoretical_ratio(self) -> float:
        """Expected step time relative to clean training, from :attr:`cost`."""
        forward, input_backward, param_backward = self.cost
        return (forward + input_backward + 2 * param_backward) / 3

    # ---------------------------------------------------------------------- updates
    def grads(self, objective: Objective, params: Params, info: BatchInfo, rng, state):
        """Returns ``(grads, metrics, new_state)``; ``grads`` are this device's share."""
        raise NotImplementedError

    def update(self, objective, params, opt_state, info: BatchInfo, rng, state, descend: Descend):
        """One training update on a batch: ``(params, opt_state, metrics, state)``."""
        grads, metrics, state = self.grads(objective, params, info, rng, state)
        new_params, opt_state, grad_norm = descend(params, opt_state, grads)
        new_params, state, after = self.after_descend(params, new_params, state, info)
        return new_params, opt_state, {**metrics, **after, "grad_norm": grad_norm}, state

    def after_descend(self, params: Params, new_params: Params, state, info: BatchInfo):
        """What follows the optimizer update (SMART's teacher average, R3F's spectral
        normalisation): ``(new_params, state, metrics)``; ``params`` are those the
        gradients were taken at. The default changes nothing."""
        return new_params, state, {}

    # ---------------------------------------------------------------------- helpers
    def radius_scale(self, info: BatchInfo) -> jax.Array:
        """The radius schedule's factor at ``info.step`` (scalar): 1 when constant, else a
        linear ramp from 0 over ``adv.radius_ramp_steps`` steps from ``adv.begin_step``."""
        cfg = self.config
        if cfg.get("radius_schedule", "constant") == "linear" and cfg.radius_ramp_steps > 0:
            done = (info.step - cfg.begin_step + 1).astype(jnp.float32)
            return jnp.clip(done / cfg.radius_ramp_steps, 0.0, 1.0)
        return jnp.asarray(1.0, jnp.float32)

    def unit(self, info: BatchInfo) -> jax.Array:
        """The unit of radii and absolute step sizes (scalar): 1 under ``adv.radius_unit
        = absolute``; under ``embedding_rms`` the RMS L2 norm of the embedding rows of
        the current parameters (``info.embedding_rms``, no gradient), so that one config
        is the same threat on a table of std 0.02 (LLaMA) and one of std 1 (T5)."""
        if self.config.get("radius_unit", "absolute") != "embedding_rms":
            return jnp.asarray(1.0, jnp.float32)
        if info.embedding_rms is None:
            raise ValueError(
                "adv.radius_unit=embedding_rms needs BatchInfo.embedding_rms "
                "(model.embedding_rms(params)) from the train step"
            )
        return jax.lax.stop_gradient(jnp.asarray(info.embedding_rms, jnp.float32))

    def radius(self, info: BatchInfo) -> jax.Array:
        """The scheduled radius at ``info.step`` (scalar): ``adv.epsilon`` times
        :meth:`radius_scale` times :meth:`unit`; ``inf`` when ``adv.unbounded``."""
        if self.config.get("unbounded", False):
            return jnp.asarray(math.inf, jnp.float32)
        epsilon = jnp.asarray(self.config.epsilon, jnp.float32)
        return epsilon * self.radius_scale(info) * self.unit(info)

    def at_radius(self, directions: Delta, info: BatchInfo, radius) -> Delta:
        """Each stream's ``[B, L, D]`` direction normalised in ``adv.norm``, ``adv.scope``
        and ``adv.stream_geometry`` (joint: all streams together) and scaled to
        ``radius`` (scalar or ``[B]``), masked, without gradient."""
        o, masks = self.opt, self.masks(info)
        unit = geometry.normalize_streams(
            directions, masks, o.norm, o.scope, o.linf_step, o.stream_geometry
        )
        return {k: jax.lax.stop_gradient(geometry.broadcast(radius) * v) for k, v in unit.items()}

    def rng_at(self, rng: jax.Array, index: int | jax.Array) -> jax.Array:
        """Dropout key of forward pass ``index`` of an update (a pass whose outputs enter
        the loss): the update's key itself under ``adv.dropout = shared`` (FreeLB's
        shared mask), else a key of its own."""
        if self.dropout == "shared":
            return rng
        return jax.random.fold_in(rng, index)

    def attack_rng(self, rng: jax.Array, index: int | jax.Array) -> jax.Array | None:
        """Dropout key of attack pass ``index`` (one that only moves ``delta``): ``None``
        (deterministic) under ``adv.dropout = eval``, else :meth:`rng_at`."""
        if self.dropout == "eval":
            return None
        return self.rng_at(rng, index)

    def eval_cost(self) -> tuple[float, float, float]:
        """Passes ``adv.dropout = eval`` adds to :attr:`cost`: the deterministic clean
        forward that a divergence inner objective measures against."""
        if self.dropout == "eval" and self.opt.inner != "ce":
            return (1, 0, 0)
        return (0, 0, 0)

    def masks(self, info: BatchInfo) -> dict[str, jax.Array]:
        """``info.masks`` (the model's :meth:`perturbable_mask`) restricted to the tokens
        of ``adv.perturb_tokens`` (prompt / response of a chat batch) and with the tokens
        of ``adv.skip_token_ids`` off as well. ``info.masks`` itself stays every real
        token (NEFTune's ``L_i``)."""
        which = self.config.get("perturb_tokens", "all")
        masks = token_scope.restrict(info.masks, info.batch, which)
        token_ids = tuple(self.config.get("skip_token_ids", ()))
        if not token_ids:
            return masks
        out = {}
        for stream, mask in masks.items():
            if info.tokens is not None:
                tokens = info.tokens.get(stream)
            else:  # a caller that does not pass model.stream_tokens(batch) yet
                tokens = _batch_stream_tokens(info.batch, stream)
            ok = tokens is not None and tokens.shape == mask.shape
            out[stream] = geometry.exclude_tokens(mask, tokens, token_ids) if ok else mask
        return out

    def divergence(self, clean_out: dict, adv_out: dict, info: BatchInfo, kind: str):
        """Per-example ``[B]`` divergence; ``kl`` is ``KL(p_clean || p_adv)``."""
        return self.task.divergence(clean_out, adv_out, info.batch, kind)

    def inner_loss(self, objective, params, info: BatchInfo, clean_out: dict | None, kind: str):
        """The per-example ``[B]`` quantity an ascent step maximises, ``(delta, rng) -> [B]``.

        ``ce``: the task loss at ``x + delta``; ``kl``/``reverse_kl``/``symmetric_kl``: the
        divergence between the (stop-gradient) clean outputs and those at ``x + delta``;
        under ``adv.dropout = eval`` the clean outputs of a deterministic forward instead
        (the attack runs in eval mode throughout, as TRADES' reference code).
        """
        if kind == "ce":
            return lambda delta, rng: objective(params, delta, rng)[0]
        if self.dropout == "eval":  # the attack measures against a deterministic clean pass
            clean_out = objective(params, {}, None)[1]
        clean = jax.lax.stop_gradient(clean_out)
        return lambda delta, rng: self.divergence(
            clean, objective(params, delta, rng)[1], info, kind
        )

    def flip_rate(self, clean: dict, perturbed: dict, info: BatchInfo) -> jax.Array:
        """Fraction of examples whose prediction the perturbation changed."""
        return info.global_example_mean(self.flips(clean, perturbed))

    def flips(self, clean: dict, perturbed: dict) -> jax.Array:
        """Per-example ``[B]`` fraction of predictions the perturbation changed."""
        changed = self.task.predictions(clean) != self.task.predictions(perturbed)
        if changed.ndim > 1:  # token-level tasks: fraction of changed tokens per example
            changed = jnp.mean(changed.astype(jnp.float32), axis=tuple(range(1, changed.ndim)))
        return changed.astype(jnp.float32)

    def metrics(self, info: BatchInfo, terms: dict, delta: Delta, clean_out, adv_out) -> dict:
        """The standard per-step metrics from this device's loss terms (local shares).

        Args:
          terms: ``{"clean", "adv", "div"}`` local means; summed over devices here.
        """
        clean, adv, div = (info.psum(terms[k]) for k in ("clean", "adv", "div"))
        o = self.opt
        # the norm the radius bounds (joint over streams, or per stream / token)
        norms = geometry.bounded_norms(delta, o.norm, o.scope, o.stream_geometry)
        return {
            "loss": o.weight_clean * clean + o.weight_adv * adv + o.weight_div * div,
            "loss_clean": clean,
            "loss_adv": adv,
            "loss_div": div,
            "perturbation_norm": info.global_example_mean(norms),
            "perturbation_norm_max": info.global_max(norms),
            "flip_rate": self.flip_rate(clean_out, adv_out, info),
        }

    def step_size(self, radius, info: BatchInfo) -> jax.Array:
        """``adv.step_size`` (times :meth:`unit`), or ``2.5 * radius / steps`` (Madry et
        al.; ``radius`` is in absolute units already) when left at 0."""
        return ascent.step_size(self.opt, radius, self.unit(info))

    def clean_term(self, clean_out: dict, info: BatchInfo) -> jax.Array:
        """This device's share of the clean loss (VAT overrides it for unlabelled data)."""
        return info.local_mean(self.task.loss(clean_out, info.batch))

    def adv_term(self, per_example: jax.Array, adv_out: dict, info: BatchInfo) -> jax.Array:
        """This device's share of the perturbed loss from the objective's ``[B]`` losses."""
        return info.local_mean(per_example)

    #: whether the ``w_div`` term's gradient flows through the clean outputs (VAT: no)
    div_through_clean: bool = True
    #: whether the perturbed pass of :meth:`descent_grads` runs on detached embeddings
    #: (``objective(..., detach_embeddings=True)``; R3F as fairseq)
    detach_perturbed: bool = False

    def clean_forward(self, objective, params, rng):
        """The clean forward pass, kept differentiable without a second forward.

        Returns:
          ``(clean_out, pullback)``: ``pullback(d_outputs) -> (d_params,)`` (``jax.vjp``).
        """
        clean_out, pullback = jax.vjp(lambda p: objective(p, {}, rng)[1], params)
        return clean_out, pullback

    def descent_grads(self, objective, params, delta, info, rng, clean_out, pullback, extra=None):
        """Gradient of ``w_clean L(x) + w_adv L(x + delta) + w_div D(p(x), p(x + delta))``
        (plus ``extra(clean_out)``), reusing the clean forward through ``pullback``.

        Args:
          delta: the (fixed) perturbation; rng: dropout key of the perturbed forward.
          pullback: from :meth:`clean_forward`; ``None`` holds the clean outputs fixed
            (the caller has the clean gradient already).
          extra: optional ``clean_out -> (local loss, metrics)`` added to the loss (SMART's
            Bregman term).

        Returns:
          ``(grads, terms, adv_out, extra_metrics)``; ``terms`` holds local shares.
        """
        o = self.opt
        delta = jax.tree.map(jax.lax.stop_gradient, delta)

        def loss_fn(p, clean):
            if self.detach_perturbed:
                per_adv, adv_out = objective(p, delta, rng, detach_embeddings=True)
            else:
                per_adv, adv_out = objective(p, delta, rng)
            div_clean = clean if self.div_through_clean else jax.lax.stop_gradient(clean)
            terms = {
                "clean": self.clean_term(clean, info),
                "adv": self.adv_term(per_adv, adv_out, info),
                "div": info.local_div_mean(self.divergence(div_clean, adv_out, info, o.divergence)),
            }
            loss = o.weight_clean * terms["clean"] + o.weight_adv * terms["adv"]
            loss = loss + o.weight_div * terms["div"]
            extra_metrics = {}
            if extra is not None:
                extra_loss, extra_metrics = extra(clean)
                loss = loss + extra_loss
            return loss, (terms, adv_out, extra_metrics)

        (_, (terms, adv_out, extra_metrics)), (grads, d_clean) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True
        )(params, clean_out)
        # Skip the clean backward when no term reaches the clean outputs (a static fact of
        # the config): a zero cotangent would still cost a full backward pass.
        reaches_clean = o.weight_clean or (o.weight_div and self.div_through_clean) or extra
        if pullback is not None and reaches_clean:
            (clean_grads,) = pullback(d_clean)
            grads = jax.tree.map(jnp.add, grads, clean_grads)
        return grads, terms, adv_out, extra_metrics


class DelayedStart:
    """A method whose adversary starts at ``adv.begin_step``: plain training (``clean``)
    before, ``method`` from then on. :func:`~llama_adv.adversarial.build_method` applies it;
    every attribute but :meth:`update` is the wrapped method's.

    Both branches live in one compiled program (``lax.cond``); the clean branch reports
    zeros for the metrics only the adversarial branch has.
    """

    def __init__(self, method: Method, clean: Method, begin_step: int):
        self.method = method
        self.clean = clean
        self.begin_step = int(begin_step)

    def __getattr__(self, name: str):  # only reached for names this class lacks
        return getattr(self.__dict__["method"], name)

    def update(self, objective, params, opt_state, info: BatchInfo, rng, state, descend):
        args = (objective, params, opt_state, info, rng, state, descend)
        return self._either("update", args, info, state, metrics_at=2, state_at=3)

    def grads(self, objective, params, info: BatchInfo, rng, state):
        args = (objective, params, info, rng, state)
        return self._either("grads", args, info, state, metrics_at=1, state_at=2)

    def after_descend(self, params, new_params, state, info: BatchInfo):
        args = (params, new_params, state, info)
        return self._either("after_descend", args, info, state, metrics_at=2, state_at=1)

    def _either(self, name: str, args: tuple, info: BatchInfo, state, metrics_at, state_at):
        """``method.<name>(*args)`` from ``begin_step`` on, ``clean.<name>(*args)`` before:
        its output at ``metrics_at`` padded with zeros to the method's metrics, at
        ``state_at`` the method ``state`` unchanged."""
        adversarial = getattr(self.method, name)
        metric_shapes = jax.eval_shape(lambda: adversarial(*args))[metrics_at]

        def warmup(_):
            out = list(getattr(self.clean, name)(*args))
            metrics = out[metrics_at]
            out[metrics_at] = {
                k: metrics.get(k, jnp.zeros(s.shape, s.dtype)) for k, s in metric_shapes.items()
            }
            out[state_at] = state
            return tuple(out)

        return jax.lax.cond(
            info.step >= self.begin_step, lambda _: tuple(adversarial(*args)), warmup, None
        )


def _batch_stream_tokens(batch: dict, stream: str) -> jax.Array | None:
    """Fallback for a :class:`BatchInfo` without ``tokens``: the token ids ``[B, L]``
    behind a stream guessed from the batch's fields (``Model.stream_tokens`` is the
    authority; remove this once every caller passes ``tokens``)."""
    if stream in batch:
        return batch[stream]
    if f"{stream}_inputs" in batch:
        return batch[f"{stream}_inputs"]
    if stream == "inputs" and "encoder_inputs" in batch:  # decoder-only model on seq2seq
        return jnp.concatenate([batch["encoder_inputs"], batch["decoder_inputs"]], axis=1)
    return None
