"""``train_and_evaluate(config, workdir)``: the one training loop.

Resumes from the newest readable checkpoint in ``workdir``; writes ``config.json``,
``sessions.jsonl`` (the commit and machine of each start), ``metrics.jsonl``, TensorBoard
events, ``checkpoints/`` and ``summary.json``. One ``train`` per workdir at a time (a lock
file); a finished run is not trained or evaluated again, unless its evaluation settings
changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from llama_adv.config import get_default_config, to_json
from llama_adv.config.validate import validate_config
from llama_adv.data.pipeline import TrainStream
from llama_adv.data.shared_vocab import (
    check_resumed_tokenizer,
    check_same_tokenizer,
    save_tokenizer,
)
from llama_adv.errors import UserError
from llama_adv.models import count_params
from llama_adv.train.checkpoint import Checkpointer, UnreadableCheckpoints
from llama_adv.train.distributed import barrier, broadcast, check_devices, is_main, together
from llama_adv.train.evaluate import evaluate, make_eval_step
from llama_adv.train.mesh import batch_shards, mesh_from_config, replicated, to_global
from llama_adv.train.microbatches import check_divisible
from llama_adv.train.optimizer import make_optimizer, make_schedule
from llama_adv.train.partitioning import mirrored_shardings, param_shardings
from llama_adv.train.setup import Experiment, build_experiment, example_batch
from llama_adv.train.state import TrainState
from llama_adv.train.step import make_train_step, perturbed_streams
from llama_adv.train.warm_start import resolve_source, warm_start
from llama_adv.train.workdir import (
    check_same_run,
    check_workdir,
    clear_workdir,
    describe_changes,
    read_run_config,
    record_session,
    set_aside,
    workdir_lock,
)
from llama_adv.train.writers import MetricWriter

# Named random streams derived from the run's root key.
PARAMS, STEPS, EVAL, LORA = 0, 1, 2, 3
TOKEN_FIELDS = ("inputs", "encoder_inputs", "decoder_inputs")


class TrainingDiverged(UserError):
    """A loss became NaN or Inf; the checkpoints saved before it are kept."""


def create_state(
    exp: Experiment, config: mlc.ConfigDict, optimizer, mesh, params: Any = None
) -> TrainState:
    """The train state of :func:`create_run` (without LoRA's frozen base)."""
    return create_run(exp, config, optimizer, mesh, params)[0]


def create_run(
    exp: Experiment, config: mlc.ConfigDict, optimizer, mesh, params: Any = None
) -> tuple[TrainState, Any]:
    """Initialises parameters (unless the model's ``params`` are given), optimizer and
    method state, each placed on ``mesh`` by :func:`state_shardings` (built there, never
    whole on one device).

    Returns:
      ``(state, frozen)``: with LoRA (``exp.lora``) ``state.params`` are the adapters and
      task head and ``frozen`` the base weights (re-created, never checkpointed: from the
      seed or ``train.init_from``); without, ``frozen`` is None.
    """
    root = jax.random.key(config.train.seed)
    if params is None:
        params = init_params(exp, config, mesh)
    frozen = None
    if exp.lora is not None:
        split = functools.partial(exp.lora.split, jax.random.fold_in(root, LORA))
        trainable, frozen = jax.eval_shape(split, params)
        shardings = (param_shardings(trainable, mesh), param_shardings(frozen, mesh))
        params, frozen = jax.jit(split, out_shardings=shardings)(params)
    # Method state shaped like one global training batch at full length (FreeAT's carried
    # perturbation); shorter bucketed batches use its leading columns.
    build = state_builder(
        exp, optimizer,
        num_examples=len(exp.dataset.split(config.data.train_split)),
        batch=example_batch(exp.dataset, config.data.train_split, config.train.batch_size),
        seed=config.train.seed,
    )  # fmt: skip
    shardings = state_shardings(jax.eval_shape(build, params, frozen), mesh)
    return jax.jit(build, out_shardings=shardings)(params, frozen), frozen


def state_builder(exp: Experiment, optimizer, *, num_examples: int, batch, seed: int):
    """``build(params, frozen) -> TrainState``: step 0, the optimizer and method state of
    ``params`` (the trained ones; ``frozen``: LoRA's base or None). ``batch``: arrays or
    shape structs of one global training batch; ``num_examples``: the training split's
    size (per-example method state). Traceable, so :func:`jax.eval_shape` gives the state's
    shapes without allocating it."""

    def build(params, frozen) -> TrainState:
        model_params = params if exp.lora is None else exp.lora.combine(frozen, params)
        streams, model = perturbed_streams(exp.model, exp.method.config)
        shapes = jax.eval_shape(model.embed, model_params, batch)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            method_state=exp.method.init_state(  # the perturbed streams (latents too)
                params, num_examples, batch_shapes={k: shapes[k].shape for k in streams}
            ),
            rng=jax.random.key_data(jax.random.key(seed)),
        )

    return build


def model_params(exp: Experiment, state: TrainState, frozen: Any) -> Any:
    """The model's parameters of ``state``: LoRA's base with the adapters merged, else
    ``state.params`` themselves."""
    if exp.lora is None:
        return state.params
    return _jitted_combine(exp.lora)(frozen, state.params)


@functools.cache
def _jitted_combine(lora):
    """One jitted merge per LoRA setting, so each evaluation reuses its compilation."""
    return jax.jit(lora.combine)


def state_shardings(state: TrainState, mesh) -> TrainState:
    """Where each leaf of ``state`` (arrays or shape structs) lives: parameters by their
    logical axes, optimizer and method state like the parameters they mirror, the rest
    replicated."""
    params = param_shardings(state.params, mesh)
    return TrainState(
        step=replicated(mesh),
        params=params,
        opt_state=mirrored_shardings(state.opt_state, state.params, params, mesh),
        method_state=mirrored_shardings(state.method_state, state.params, params, mesh),
        rng=replicated(mesh),
    )


def init_params(exp: Experiment, config: mlc.ConfigDict, mesh) -> Any:
    """Fresh parameters from the run's seed, initialised in place on ``mesh``."""
    key = jax.random.fold_in(jax.random.key(config.train.seed), PARAMS)
    batch = example_batch(exp.dataset, config.data.train_split, mesh.size)
    shardings = param_shardings(jax.eval_shape(exp.model.init, key, batch), mesh)
    return jax.jit(exp.model.init, out_shardings=shardings)(key, batch)


def warm_started_params(exp: Experiment, config: mlc.ConfigDict, mesh, workdir: Path) -> Any:
    """Fresh parameters overwritten by ``train.init_from``'s; prints and saves the report."""
    params, report = warm_start(
        init_params(exp, config, mesh), config.train.init_from, config.model.to_dict()
    )
    print(report.summary())
    if is_main():
        (workdir / "init_report.json").write_text(json.dumps(dataclasses.asdict(report), indent=2))
    return params


def _non_finite(history: dict[int, dict]) -> tuple[int, list[str]] | None:
    for step in sorted(history):
        bad = [k for k, v in history[step].items() if not np.isfinite(v)]
        if bad:
            return step, bad
    return None


def _mean_metrics(history: dict[int, dict]) -> dict[str, float]:
    keys = history[max(history)].keys()
    return {k: float(np.mean([m[k] for m in history.values()])) for k in keys}


def _read_summary(workdir: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((workdir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def train_and_evaluate(
    config: mlc.ConfigDict, workdir: str | Path, *, overwrite: bool = False
) -> dict[str, Any]:
    """Trains (or resumes) the run ``config`` describes in ``workdir``; returns the summary.

    Args:
      config: the resolved config.
      workdir: the run's folder (created if missing).
      overwrite: delete whatever ``workdir`` holds and start again.

    Raises:
      UserError: bad config, an unusable workdir, one in use by another ``train``, one
        holding another run or no readable checkpoint, or a diverged loss.
    """
    validate_config(config)
    workdir = Path(workdir)
    # In a multi-process run a check failing in one process stops all with its message.
    with together():
        check_workdir(workdir)
        check_devices(config.train.num_devices)
        exp = build_experiment(config)
        if config.train.init_from:
            # A bad path, or a source that tokenized otherwise, fails before anything is written.
            check_same_tokenizer(resolve_source(config.train.init_from), exp.dataset.tokenizer)
    with contextlib.ExitStack() as lock:
        with together():
            if is_main():  # process 0 holds the lock for all processes of the run
                lock.enter_context(workdir_lock(workdir))
        try:
            return _train_locked(config, workdir, exp, overwrite)
        except KeyboardInterrupt:  # outside the training loop (or a second Ctrl-C)
            raise UserError(
                "Interrupted; run the same command again to resume from the newest readable "
                "checkpoint."
            ) from None


def _train_locked(
    config: mlc.ConfigDict, workdir: Path, exp: Experiment, overwrite: bool
) -> dict[str, Any]:
    """What ``train_and_evaluate`` does once it holds the workdir's lock: checks the run
    in it (or clears it), then returns a finished run's summary or trains."""
    resolved = to_json(config)
    changed: list[str] = []
    note = ""
    with together():  # process 0 reads (or clears) the workdir, the others wait for it
        if is_main():
            old = None
            if overwrite:
                clear_workdir(workdir)
            elif (old := read_run_config(workdir)) is not None:
                defaults = json.loads(to_json(get_default_config()))
                changed = check_same_run(workdir, old, json.loads(resolved), defaults)
                check_resumed_tokenizer(workdir, exp.dataset.tokenizer)
            note = describe_changes(old, json.loads(resolved), changed) if changed else ""
    changed = broadcast(changed)
    tc = config.train
    mesh = mesh_from_config(config)
    # Over optimizer updates, not batches: FreeAT takes adv.freeat.replays per batch.
    schedule = make_schedule(config.optim, tc.num_steps * exp.method.updates_per_batch)
    optimizer = make_optimizer(config.optim, schedule)
    ckpt = Checkpointer(
        workdir / "checkpoints", config.checkpoint.keep,
        config.checkpoint.best_metric, config.checkpoint.best_mode, cleanup=True,
    )  # fmt: skip
    try:
        previous = _read_summary(workdir)
        finished = (
            ckpt.latest_step() == tc.num_steps
            and previous is not None
            and previous.get("step") == tc.num_steps
        )
        finished = broadcast(finished)  # process 0's view: the others go its way
        if finished and not any(k.startswith("eval.") for k in changed):
            if is_main():
                _write_config(workdir, resolved, note)
            print(f"{workdir} holds this run, finished at step {tc.num_steps}; its summary.json "
                  "is unchanged.")  # fmt: skip
            return previous
        return _train(config, workdir, exp, mesh, schedule, optimizer, ckpt, resolved, note,
                      previous)  # fmt: skip
    finally:
        ckpt.close()


def _write_config(workdir: Path, resolved: str, note: str) -> None:
    if note:
        print(f"config changed since this run last ran: {note}; these do not change the "
              "training, so it goes on (config.json updated).")  # fmt: skip
    path = workdir / "config.json"
    tmp = path.with_name("config.json.tmp")
    tmp.write_text(resolved + "\n")
    tmp.replace(path)


def _restore(ckpt: Checkpointer, state: TrainState, workdir: Path, mesh) -> tuple[TrainState, int]:
    """The newest readable checkpoint's state (``state`` itself when there is none); newer
    unreadable ones are reported and moved aside."""
    try:
        restored = ckpt.restore_latest(state)
    except UnreadableCheckpoints as error:
        steps = ", ".join(f"{s} ({why})" for s, why in error.failures)
        raise UserError(
            f"No checkpoint in {workdir}/checkpoints can be read (step {steps}). Pass "
            "--overwrite to delete that run and start again, or use another --workdir."
        ) from None
    if restored is None:
        return state, 0
    for step, why in restored.unreadable:
        if not is_main():  # process 0 moves the folders
            continue
        moved = set_aside(workdir, ckpt.step_dir(step))
        print(f"warning: checkpoint {ckpt.step_dir(step)} is unreadable ({why}); resuming "
              f"from step {restored.step}, the newest readable one (it was moved to {moved}).",
              file=sys.stderr)  # fmt: skip
    if restored.unreadable:
        barrier("unreadable checkpoints moved aside")
        ckpt.forget()
    print(f"resumed from step {restored.step} (data position "
          f"{restored.record['data_position']})")  # fmt: skip
    devices = restored.record.get("num_devices")
    if devices is not None and devices != mesh.size:
        print(f"warning: this run trained on {devices} devices and goes on on {mesh.size}; "
              "its losses will differ in the last bits from an uninterrupted run's.",
              file=sys.stderr)  # fmt: skip
    return restored.state, restored.step


def _train(config, workdir, exp, mesh, schedule, optimizer, ckpt, resolved, note, previous):
    tc = config.train
    check_divisible(tc.batch_size, tc.microbatches, batch_shards(mesh))  # before any write
    params = None
    # A resumed run has its parameters in its checkpoint, except LoRA's frozen base.
    if tc.init_from and (ckpt.latest_step() is None or exp.lora is not None):
        params = warm_started_params(exp, config, mesh, workdir)
    state, frozen = create_run(exp, config, optimizer, mesh, params)
    num_params = count_params(state.params) + (count_params(frozen) if frozen else 0)
    layout = " x ".join(f"{axis} {size}" for axis, size in mesh.shape.items() if size > 1)
    trained = (f", {count_params(state.params):,} trained (LoRA rank {exp.lora.rank})"
               if exp.lora else "")  # fmt: skip
    print(f"model {config.model.name}: {num_params:,} parameters{trained}; {mesh.size} devices"
          + (f" ({layout})" if layout else ""))  # fmt: skip
    state, start = _restore(ckpt, state, workdir, mesh)
    # From here on the workdir holds a run in progress: no summary until it ends.
    if is_main():
        (workdir / "summary.json").unlink(missing_ok=True)
        _write_config(workdir, resolved, note)
        save_tokenizer(workdir, exp.dataset.tokenizer)  # for data.tokenizer=spm:WORKDIR
        record_session(workdir, start, mesh.size)

    train_step = make_train_step(
        exp.model, exp.task, exp.method, optimizer, schedule, mesh, config.adv,
        state_shardings=jax.tree.map(lambda x: x.sharding, state), lora=exp.lora,
        microbatches=tc.microbatches,
    )  # fmt: skip
    eval_step = make_eval_step(exp.model, exp.task, config.eval.attack)
    eval_split = exp.dataset.split(config.eval.split)
    train_split = exp.dataset.split(config.data.train_split)
    stream = TrainStream(train_split, tc.batch_size, tc.seed, config.data.group_by_length)
    root = jax.random.wrap_key_data(state.rng)
    train_rng, eval_rng = jax.random.fold_in(root, STEPS), jax.random.fold_in(root, EVAL)
    # A finished run evaluated again (its evaluation settings changed): its old final
    # evaluation row goes.
    writer = MetricWriter(workdir, tc.num_steps, start, tc.progress_bar,
                          keep_eval_at_start=start < tc.num_steps,
                          enabled=is_main())  # fmt: skip
    if writer.dropped:
        print(f"metrics.jsonl: dropped {writer.dropped} line(s) logged after step {start} (or "
              "cut short) by an earlier attempt")  # fmt: skip

    pending: list[tuple[int, Any]] = []  # device metrics not yet fetched
    checked: dict[int, dict] = {}  # fetched metrics since the last log line, by step
    step_times: list[float] = []
    # Tokens (padding included) of each step's global batch, by step done: with length
    # buckets the batches' widths differ.
    batch_tokens: dict[int, int] = {}
    tick, tick_step = time.perf_counter(), start

    def fetch() -> None:
        checked.update(jax.device_get(pending))
        pending.clear()
        if (bad := _non_finite(checked)) is not None:
            kept = ckpt.latest_step()
            saved = (f"The last good checkpoint, of step {kept}, is kept" if kept is not None
                     else "No checkpoint was saved before it")  # fmt: skip
            raise TrainingDiverged(
                f"Training diverged: {', '.join(bad[1])} is not finite at step {bad[0]}. "
                f"{saved}; lower optim.learning_rate or adv.epsilon, or set adv.begin_step "
                "to start the adversary later."
            )

    def log(done: int) -> None:
        """Writes the mean of the fetched metrics of steps after the last row up to
        ``done`` as the row of ``done``."""
        nonlocal tick, tick_step
        rows = {s: m for s, m in checked.items() if writer.last_train_step < s <= done}
        tokens = sum(batch_tokens.pop(s) for s in list(batch_tokens) if s <= done)
        if rows:
            elapsed = time.perf_counter() - tick
            if tick_step > start:  # the first interval includes compilation
                step_times.append(elapsed / (done - tick_step))
            logged = _mean_metrics(rows)
            logged["examples_per_sec"] = tc.batch_size * (done - tick_step) / elapsed
            logged["tokens_per_sec"] = tokens / elapsed
            writer.write(done, logged)
        checked.clear()
        tick, tick_step = time.perf_counter(), done

    def save(metrics: dict | None = None) -> None:
        fetch()  # never checkpoint a state whose losses were not finite
        record = {"data_position": int(jax.device_get(state.step)), "num_devices": mesh.size}
        ckpt.save(state, record, metrics)

    try:
        for step in range(start, tc.num_steps):
            local = stream.batch(step)
            batch_tokens[step + 1] = tc.batch_size * sum(
                v.shape[1] for k, v in local.items() if k in TOKEN_FIELDS
            )
            batch = to_global(local, mesh)
            new_state, metrics = train_step(
                state, batch, jax.random.fold_in(train_rng, step), frozen
            )
            pending.append((step + 1, metrics))  # before ``state``: see the Ctrl-C path
            state = new_state
            done = step + 1
            if done % tc.log_every == 0 or done == tc.num_steps:
                fetch()
                log(done)
            if tc.eval_every and done % tc.eval_every == 0 and done < tc.num_steps:
                params = model_params(exp, state, frozen)
                results = evaluate(eval_step, params, eval_split, mesh, config.eval, eval_rng)
                writer.write(done, results, kind="eval")
                save(results)
                tick = time.perf_counter()
            elif done % config.checkpoint.every_steps == 0 and done < tc.num_steps:
                save()
        params = model_params(exp, state, frozen)
        final = evaluate(eval_step, params, eval_split, mesh, config.eval, eval_rng)
        writer.write(int(jax.device_get(state.step)), final, kind="eval")
        save(final)
    except KeyboardInterrupt:
        # The row of the interrupted step first (metrics of steps the state has not
        # reached are left out), then the checkpoint.
        at = int(jax.device_get(state.step))
        pending[:] = [(s, m) for s, m in pending if s <= at]
        fetch()
        log(at)
        save()
        raise UserError(
            f"Interrupted at step {at}; checkpoint saved. Run the same command again to resume."
        ) from None
    finally:
        writer.close()

    summary = {
        "step": int(jax.device_get(state.step)),
        "num_params": num_params,
        "method": config.adv.method,
        "passes": list(exp.method.passes),
        "step_time_sec": statistics.median(step_times) if step_times else None,
        "eval": final,
    }
    if summary["step_time_sec"] is None and previous is not None:  # evaluated again only
        summary["step_time_sec"] = previous.get("step_time_sec")
    if is_main():
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
