"""The one train step for every model, task and adversarial method.

``train_step(state, batch, rng) -> (state, metrics)`` is jitted once. Inside, a
``shard_map`` over the ``"data"`` axis gives each device its shard of the global batch
(pmap semantics): the method computes this device's share of the gradient of the global
mean loss, and ``descend`` sums the shares over devices before the optimizer update.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec

from llama_adv.adversarial import BatchInfo, Method, select_streams
from llama_adv.models import Model
from llama_adv.tasks import Task
from llama_adv.train.mesh import DATA_AXIS
from llama_adv.train.state import TrainState

TrainStep = Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]


def make_objective(model: Model, task: Task, batch: dict, masks: dict):
    """Closes the model and task over one batch: ``(params, delta, rng) -> (loss [B], out)``.

    The embedding lookup happens inside, so the gradient reaches the embedding table;
    ``delta`` is masked again here so that no method can perturb padding. ``rng=None``
    runs the model deterministically (no dropout); ``detach_embeddings=True`` keeps the
    gradient of this pass out of the embedding table (fairseq's R3F noisy branch).
    """

    def objective(params, delta, rng, detach_embeddings=False):
        embedded = model.embed(params, batch)
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
            batch,
            deterministic=rng is None,
            rngs=None if rng is None else {"dropout": rng},
        )
        return task.loss(outputs, batch), outputs

    return objective


def make_train_step(
    model: Model,
    task: Task,
    method: Method,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    adv_config,
) -> TrainStep:
    """Builds the jitted, data-parallel train step.

    Args:
      method: from :func:`~llama_adv.adversarial.build_method` (which applies the delayed
        start of ``adv.begin_step``); the step only calls its ``update``.
      adv_config: the ``adv`` section (streams to perturb, ``perturb_special``).

    Returns:
      ``train_step(state, batch, rng)``: ``batch`` holds global arrays sharded over
      ``"data"``, ``rng`` is this step's key; ``state`` is donated.
    """
    streams = select_streams(adv_config.streams, model.streams)

    def descend(params, opt_state, grads):
        grads = jax.lax.psum(grads, DATA_AXIS)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)

    def per_device(state: TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA_AXIS))
        all_masks = model.perturbable_mask(
            batch, perturb_special=bool(adv_config.get("perturb_special", False))
        )
        masks = {k: all_masks[k].astype(jnp.float32) for k in streams}
        tokens = model.stream_tokens(batch)
        shapes = jax.eval_shape(model.embed, state.params, batch)
        info = BatchInfo(
            masks=masks,
            shapes={k: shapes[k].shape for k in streams},
            batch=batch,
            denominator=jax.lax.psum(jnp.sum(task.denominator(batch)), DATA_AXIS),
            step=state.step,
            axis_name=DATA_AXIS,
            div_denominator=jax.lax.psum(jnp.sum(task.divergence_denominator(batch)), DATA_AXIS),
            tokens={k: tokens[k] for k in streams},
            embedding_rms=model.embedding_rms(state.params),
        )
        objective = make_objective(model, task, batch, masks)
        params, opt_state, metrics, method_state = method.update(
            objective, state.params, state.opt_state, info, rng, state.method_state, descend
        )
        # The schedule counts optimizer updates (FreeAT takes several per batch).
        metrics = {**metrics, "learning_rate": schedule(state.step * method.updates_per_batch)}
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, method_state=method_state
        )
        return new_state, metrics

    sharded = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(DATA_AXIS), PartitionSpec()),
        out_specs=(PartitionSpec(), PartitionSpec()),
        check_vma=False,  # pmap semantics: gradients are summed explicitly in `descend`
    )
    return jax.jit(sharded, donate_argnums=0)
