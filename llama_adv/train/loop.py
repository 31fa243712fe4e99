"""``train_and_evaluate(config, workdir)``: the one training loop.

Resumes from the latest checkpoint in ``workdir``; writes ``config.json``,
``metrics.jsonl``, TensorBoard events, ``checkpoints/`` and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from llama_adv.config import to_json
from llama_adv.data.pipeline import TrainStream
from llama_adv.errors import UserError
from llama_adv.models import count_params
from llama_adv.train.checkpoint import Checkpointer
from llama_adv.train.evaluate import evaluate, make_eval_step
from llama_adv.train.mesh import make_mesh, replicated, to_global
from llama_adv.train.optimizer import make_optimizer, make_schedule
from llama_adv.train.setup import Experiment, build_experiment, example_batch
from llama_adv.train.state import TrainState
from llama_adv.train.step import make_train_step
from llama_adv.train.warm_start import resolve_source, warm_start
from llama_adv.train.writers import MetricWriter

# Named random streams derived from the run's root key.
PARAMS, STEPS, EVAL = 0, 1, 2
TOKEN_FIELDS = ("inputs", "encoder_inputs", "decoder_inputs")
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "checkpoints", "tensorboard",
             "init_report.json")  # fmt: skip


class TrainingDiverged(UserError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


def prepare_workdir(config: mlc.ConfigDict, workdir: Path, overwrite: bool) -> None:
    """Writes ``config.json``; refuses a workdir holding a run with another config."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    resolved = to_json(config)
    if path.exists() and json.loads(path.read_text()) != json.loads(resolved):
        if not overwrite:
            old, new = json.loads(path.read_text()), json.loads(resolved)
            diff = [
                f"{s}.{k}" for s in new for k in new[s]
                if old.get(s, {}).get(k) != new[s][k]
            ]  # fmt: skip
            raise UserError(
                f"{workdir} holds a run with a different config (differs in: "
                f"{', '.join(diff[:6]) or 'sections'}). Use another --workdir, or pass "
                "--overwrite to delete that run and start again."
            )
        for name in RUN_FILES:
            target = workdir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    path.write_text(resolved + "\n")


def create_state(
    exp: Experiment, config: mlc.ConfigDict, optimizer, mesh, params: Any = None
) -> TrainState:
    """Initialises parameters (unless ``params`` are given), optimizer and method state,
    replicated on ``mesh``."""
    root = jax.random.key(config.train.seed)
    if params is None:
        params = init_params(exp, config, mesh)
    split = exp.dataset.split(config.data.train_split)
    # Method state shaped like one global training batch at full length (FreeAT's carried
    # perturbation); shorter bucketed batches use its leading columns.
    full = example_batch(exp.dataset, config.data.train_split, config.train.batch_size)
    batch_shapes = {k: v.shape for k, v in jax.eval_shape(exp.model.embed, params, full).items()}
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        method_state=exp.method.init_state(params, len(split), batch_shapes=batch_shapes),
        rng=jax.random.key_data(root),
    )
    return jax.device_put(state, replicated(mesh))


def init_params(exp: Experiment, config: mlc.ConfigDict, mesh) -> Any:
    """Fresh parameters from the run's seed."""
    root = jax.random.key(config.train.seed)
    batch = example_batch(exp.dataset, config.data.train_split, mesh.size)
    return exp.model.init(jax.random.fold_in(root, PARAMS), batch)


def warm_started_params(exp: Experiment, config: mlc.ConfigDict, mesh, workdir: Path) -> Any:
    """Fresh parameters overwritten by ``train.init_from``'s; prints and saves the report."""
    params, report = warm_start(
        init_params(exp, config, mesh), config.train.init_from, config.model.to_dict()
    )
    print(report.summary())
    (workdir / "init_report.json").write_text(json.dumps(dataclasses.asdict(report), indent=2))
    return params


def _check_finite(history: list[tuple[int, dict]]) -> None:
    for step, metrics in history:
        bad = [k for k, v in metrics.items() if not np.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"Training diverged: {', '.join(bad)} is not finite at step {step}. The last "
                "good checkpoint is kept; lower optim.learning_rate or adv.epsilon, or set "
                "adv.begin_step to start the adversary later."
            )


def _mean_metrics(history: list[tuple[int, dict]]) -> dict[str, float]:
    keys = history[-1][1].keys()
    return {k: float(np.mean([m[k] for _, m in history])) for k in keys}


def train_and_evaluate(
    config: mlc.ConfigDict, workdir: str | Path, *, overwrite: bool = False
) -> dict[str, Any]:
    """Trains (or resumes) the run ``config`` describes in ``workdir``; returns the summary.

    Raises:
      UserError: bad config, a workdir holding another run, or a diverged loss.
    """
    workdir = Path(workdir)
    exp = build_experiment(config)
    if config.train.init_from:
        resolve_source(config.train.init_from)  # a bad path fails before anything is written
    prepare_workdir(config, workdir, overwrite)
    tc = config.train
    mesh = make_mesh(tc.num_devices)
    # Over optimizer updates, not batches: FreeAT takes adv.freeat.replays per batch.
    schedule = make_schedule(config.optim, tc.num_steps * exp.method.updates_per_batch)
    optimizer = make_optimizer(config.optim, schedule)
    ckpt = Checkpointer(
        workdir / "checkpoints", config.checkpoint.keep,
        config.checkpoint.best_metric, config.checkpoint.best_mode,
    )  # fmt: skip
    latest = ckpt.latest_step()
    params = None
    if latest is None and config.train.init_from:  # a resumed run has them in its checkpoint
        params = warm_started_params(exp, config, mesh, workdir)
    state = create_state(exp, config, optimizer, mesh, params)
    num_params = count_params(state.params)
    print(f"model {config.model.name}: {num_params:,} parameters; {mesh.size} devices")
    if latest is not None:
        state, record = ckpt.restore(latest, state)
        print(f"resumed from step {latest} (data position {record['data_position']})")
    start = int(jax.device_get(state.step))

    train_step = make_train_step(
        exp.model, exp.task, exp.method, optimizer, schedule, mesh, config.adv
    )
    eval_step = make_eval_step(exp.model, exp.task, config.eval.attack)
    eval_split = exp.dataset.split(config.eval.split)
    stream = TrainStream(exp.dataset.split(config.data.train_split), tc.batch_size, tc.seed)
    root = jax.random.wrap_key_data(state.rng)
    train_rng, eval_rng = jax.random.fold_in(root, STEPS), jax.random.fold_in(root, EVAL)
    tokens_per_example = sum(v.shape[1] for k, v in stream.batch(0).items() if k in TOKEN_FIELDS)
    writer = MetricWriter(workdir, tc.num_steps, start, tc.progress_bar)

    pending: list[tuple[int, Any]] = []  # device metrics not yet fetched
    checked: list[tuple[int, dict]] = []  # fetched metrics since the last log line
    step_times: list[float] = []

    def fetch() -> None:
        checked.extend(jax.device_get(pending))
        pending.clear()
        _check_finite(checked)

    def save(metrics: dict | None = None) -> None:
        fetch()  # never checkpoint a state whose losses were not finite
        ckpt.save(state, {"data_position": int(jax.device_get(state.step))}, metrics)

    tick, tick_step = time.perf_counter(), start
    try:
        for step in range(start, tc.num_steps):
            batch = to_global(stream.batch(step), mesh)
            state, metrics = train_step(state, batch, jax.random.fold_in(train_rng, step))
            pending.append((step + 1, metrics))
            done = step + 1
            if done % tc.log_every == 0 or done == tc.num_steps:
                fetch()
                elapsed = time.perf_counter() - tick
                if tick_step > start:  # the first interval includes compilation
                    step_times.append(elapsed / (done - tick_step))
                logged = _mean_metrics(checked)
                logged["examples_per_sec"] = tc.batch_size * (done - tick_step) / elapsed
                logged["tokens_per_sec"] = logged["examples_per_sec"] * tokens_per_example
                writer.write(done, logged)
                checked.clear()
                tick, tick_step = time.perf_counter(), done
            if tc.eval_every and done % tc.eval_every == 0 and done < tc.num_steps:
                results = evaluate(eval_step, state.params, eval_split, mesh, config.eval, eval_rng)
                writer.write(done, results, kind="eval")
                save(results)
                tick = time.perf_counter()
            elif done % config.checkpoint.every_steps == 0:
                save()
        final = evaluate(eval_step, state.params, eval_split, mesh, config.eval, eval_rng)
        writer.write(int(jax.device_get(state.step)), final, kind="eval")
        save(final)
    except KeyboardInterrupt:
        save()
        raise UserError(
            f"Interrupted at step {int(jax.device_get(state.step))}; checkpoint saved. "
            "Run the same command again to resume."
        ) from None
    finally:
        ckpt.close()
        writer.close()

    summary = {
        "step": int(jax.device_get(state.step)),
        "num_params": num_params,
        "method": config.adv.method,
        "passes": list(exp.method.passes),
        "step_time_sec": statistics.median(step_times) if step_times else None,
        "eval": final,
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
