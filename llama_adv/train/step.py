"""The one train step for every model, task and adversarial method.

``train_step(state, batch, rng) -> (state, metrics)`` is jitted once over global arrays:
the batch split over the mesh's batch axes (``data`` and ``fsdp``), parameters, optimizer
and method state placed by :mod:`llama_adv.train.partitioning`. The method sees the whole
global batch (``BatchInfo.axis_name`` None: its means are global means) and XLA inserts
the collectives: the gradient all-reduce of data parallelism, FSDP's parameter
all-gathers and reduce-scatters, tensor parallelism's partial sums. Random draws
(perturbation starts, dropout) are those of the global batch, the same on any mesh.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from llama_adv.adversarial import BatchInfo, Method, select_streams
from llama_adv.models import Model
from llama_adv.models.latent import with_latent_streams
from llama_adv.models.lora import Lora
from llama_adv.tasks import Task
from llama_adv.tasks.chat import away_batch
from llama_adv.train.mesh import batch_shards, replicated
from llama_adv.train.microbatches import check_divisible, combine_metrics, split
from llama_adv.train.state import TrainState

TrainStep = Callable[..., tuple[TrainState, dict]]


def make_objective(
    model: Model, task: Task, batch: dict, masks: dict, to_model=None, dropout_fold=None
):
    """Closes the model and task over one batch: ``(params, delta, rng) -> (loss [B], out)``.

    ``to_model(params)`` turns the trained parameters into the model's (LoRA: the frozen
    base with the adapters merged); None: they are the model's. ``dropout_fold`` (a
    microbatch's index) is folded into every pass's dropout key, so that microbatches
    draw different dropout masks from the method's one key.

    The embedding lookup happens inside, so the gradient reaches the embedding table;
    ``delta`` is masked again here so that no method can perturb padding. ``rng=None``
    runs the model deterministically (no dropout); ``detach_embeddings=True`` keeps the
    gradient of this pass out of the embedding table (fairseq's R3F noisy branch).
    ``view="away"`` runs a chat batch's away sequence (prompt + harmful target, the prompt
    at the same positions; :func:`~llama_adv.tasks.chat.away_batch`) in place of the main one.
    """

    def objective(params, delta, rng, detach_embeddings=False, view=None):
        params = params if to_model is None else to_model(params)
        if rng is not None and dropout_fold is not None:
            rng = jax.random.fold_in(rng, dropout_fold)
        batch_in = away_batch(batch) if view == "away" else batch
        embedded = model.embed(params, batch_in)
        if detach_embeddings:  # no gradient to the embedding table from this pass (R3F)
            embedded = jax.tree.map(jax.lax.stop_gradient, embedded)
        embedded = {
            k: v + (delta[k] * masks[k][..., None]).astype(v.dtype) if k in delta else v
            for k, v in embedded.items()
        }
        # rng None: a deterministic (eval-mode) pass, e.g. an attack under adv.dropout=eval.
        outputs = model.apply_embedded(
            params,
            embedded,
            batch_in,
            deterministic=rng is None,
            rngs=None if rng is None else {"dropout": rng},
        )
        return task.loss(outputs, batch_in), outputs

    return objective


def perturbed_streams(model: Model, adv_config) -> tuple[tuple[str, ...], Model]:
    """The streams ``adv.streams`` perturbs, and ``model`` presenting its latent ones
    (``layer:N``) as streams (:class:`~llama_adv.models.latent.LatentStreams`)."""
    streams = select_streams(adv_config.streams, model.streams, model.latent_streams)
    return streams, with_latent_streams(model, streams)


def make_train_step(
    model: Model,
    task: Task,
    method: Method,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    adv_config,
    state_shardings=None,
    lora: Lora | None = None,
    microbatches: int = 1,
) -> TrainStep:
    """Builds the jitted train step.

    Args:
      method: from :func:`~llama_adv.adversarial.build_method` (which applies the delayed
        start of ``adv.begin_step``); the step calls its ``update`` (under microbatches,
        its ``grads`` per microbatch and ``after_descend``).
      adv_config: the ``adv`` section (streams to perturb, ``perturb_special``).
      state_shardings: a :class:`TrainState` of shardings (``loop.state_shardings``) the
        new state keeps; None: XLA's choice (tests on one device).
      lora: the run's adapters: ``state.params`` are then the trainable ones and the
        step's ``frozen`` argument the base weights.
      microbatches: ``train.microbatches``: the batch runs as that many microbatches
        (a ``lax.scan``, every pass of the method on each), their gradients summed into
        one optimizer update (:mod:`llama_adv.train.microbatches`); the method must
        allow it (``Method.microbatch_refusal``, checked with the config).

    Returns:
      ``train_step(state, batch, rng, frozen=None)``: ``batch`` holds global arrays split
      over the batch axes, ``rng`` is this step's key, ``frozen`` the LoRA base weights
      (not donated, not updated); ``state`` is donated.
    """
    streams, model = perturbed_streams(model, adv_config)

    def descend(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)

    def context(state, batch, to_model, whole=None, rows=None, index=None):
        """The method's view of ``batch`` (the step's, or one microbatch of ``whole``):
        its :class:`BatchInfo` and objective."""
        whole_batch = batch if whole is None else whole
        model_params = state.params if to_model is None else to_model(state.params)
        all_masks = model.perturbable_mask(
            batch, perturb_special=bool(adv_config.get("perturb_special", False))
        )
        masks = {k: all_masks[k].astype(jnp.float32) for k in streams}
        tokens = model.stream_tokens(batch)
        shapes = jax.eval_shape(model.embed, model_params, batch)
        info = BatchInfo(
            masks=masks,
            shapes={k: shapes[k].shape for k in streams},
            batch=batch,
            # over the whole batch, so that microbatches' losses are shares of its mean
            denominator=jnp.sum(task.denominator(whole_batch)),
            step=state.step,
            axis_name=None,  # global arrays: the method's sums are over the whole batch
            div_denominator=jnp.sum(task.divergence_denominator(whole_batch)),
            tokens={k: tokens[k] for k in streams},
            embedding_rms=model.embedding_rms(model_params),
            embedding_norm=model.embedding_norm(model_params),
            rows=rows,
            step_batch=whole,
        )
        return info, make_objective(model, task, batch, masks, to_model, dropout_fold=index)

    def accumulated_update(state, batch, rng, to_model):
        """``method.update`` with the gradients summed over ``microbatches``."""
        check_divisible(
            next(iter(jax.tree.leaves(batch))).shape[0], microbatches, batch_shards(mesh)
        )
        parts, rows = split(batch, microbatches)

        def body(carry, part):
            grads_sum, method_state = carry
            info, objective = context(state, part["batch"], to_model, batch, *part["at"])
            grads, metrics, method_state = method.grads(
                objective, state.params, info, rng, method_state
            )
            return (jax.tree.map(jnp.add, grads_sum, grads), method_state), metrics

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        at = (rows, jnp.arange(microbatches))
        (grads, method_state), stacked = jax.lax.scan(
            body, (zeros, state.method_state), {"batch": parts, "at": at}
        )
        params, opt_state, grad_norm = descend(state.params, state.opt_state, grads)
        info, _ = context(state, batch, to_model)
        params, method_state, after = method.after_descend(state.params, params, method_state, info)
        metrics = {**combine_metrics(stacked), **after, "grad_norm": grad_norm}
        return params, opt_state, metrics, method_state

    def step(state: TrainState, batch: dict, rng: jax.Array, frozen=None):
        to_model = None if lora is None else functools.partial(lora.combine, frozen)
        if microbatches > 1:
            params, opt_state, metrics, method_state = accumulated_update(
                state, batch, rng, to_model
            )
        else:
            info, objective = context(state, batch, to_model)
            params, opt_state, metrics, method_state = method.update(
                objective, state.params, state.opt_state, info, rng, state.method_state, descend
            )
        # The schedule counts optimizer updates (FreeAT takes several per batch).
        metrics = {**metrics, "learning_rate": schedule(state.step * method.updates_per_batch)}
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, method_state=method_state
        )
        return new_state, metrics

    out_shardings = None if state_shardings is None else (state_shardings, replicated(mesh))
    return OnMesh(jax.jit(step, out_shardings=out_shardings, donate_argnums=0), mesh)


class OnMesh:
    """A jitted function called (and lowered) with ``mesh`` as the current mesh, so that
    the models' activation constraints (``layers.constrain_batch``) see its axes."""

    def __init__(self, jitted, mesh: Mesh):
        self.jitted, self.mesh = jitted, mesh

    def __call__(self, *args):
        with jax.set_mesh(self.mesh):
            return self.jitted(*args)

    def lower(self, *args):
        with jax.set_mesh(self.mesh):
            return self.jitted.lower(*args)

    def __getattr__(self, name: str):  # the jitted function's own (``_cache_size``, ...)
        return getattr(self.jitted, name)
