"""Loading a trained run: its config, its pieces, and the best checkpoint's parameters."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ml_collections as mlc
from jax.sharding import Mesh

from llama_adv.config import load_config
from llama_adv.errors import UserError
from llama_adv.train.checkpoint import Checkpointer
from llama_adv.train.loop import create_run, init_params, model_params
from llama_adv.train.mesh import mesh_from_config
from llama_adv.train.optimizer import make_optimizer, make_schedule
from llama_adv.train.setup import Experiment, build_experiment
from llama_adv.train.warm_start import warm_start


@dataclasses.dataclass
class LoadedRun:
    """A run ready to attack: ``params`` are the best checkpoint's (placed on ``mesh``),
    the model's full parameters (a LoRA run's with the adapters merged in).

    For a LoRA run (``exp.lora``) the unmerged pieces are kept too: ``frozen``, the base
    weights (re-created from the seed or ``train.init_from``, in ``model.lora.base_dtype``),
    and ``trainable``, the checkpoint's ``{"lora": adapters, "classifier": ...}``; both are
    None otherwise.
    """

    workdir: Path
    config: mlc.ConfigDict
    exp: Experiment
    params: Any
    step: int
    mesh: Mesh
    frozen: Any = None
    trainable: Any = None


def run_config(workdir: str | Path, overrides: tuple[str, ...] = ()) -> mlc.ConfigDict:
    """The config of the run in ``workdir`` (its ``config.json``) with ``overrides``.

    Raises:
      UserError: ``workdir`` holds no ``config.json``, or an override is bad.
    """
    workdir = Path(workdir)
    if not (workdir / "config.json").is_file():
        raise UserError(f"{workdir} holds no config.json; is it a training run's --workdir?")
    return load_config(str(workdir / "config.json"), overrides)


def load_run(
    workdir: str | Path,
    overrides: tuple[str, ...] = (),
    config: mlc.ConfigDict | None = None,
    step: int | None = None,
) -> LoadedRun:
    """Rebuilds the run in ``workdir`` from its ``config.json`` (or ``config``, already
    resolved by :func:`run_config`) and restores ``step``: by default the best step (the
    latest when the run tracks no best).

    Raises:
      UserError: no ``config.json`` or no checkpoint in ``workdir``, or no checkpoint at
        ``step``.
    """
    workdir = Path(workdir)
    config = run_config(workdir, overrides) if config is None else config
    exp = build_experiment(config)
    mesh = mesh_from_config(config)
    # Restoring needs a state of the right structure; the optimizer only shapes opt_state.
    optimizer = make_optimizer(config.optim, make_schedule(config.optim, config.train.num_steps))
    base = None
    if exp.lora is not None and config.train.init_from:  # LoRA's frozen base is not saved
        base, _ = warm_start(
            init_params(exp, config, mesh), config.train.init_from, config.model.to_dict()
        )
    like, frozen = create_run(exp, config, optimizer, mesh, base)
    ckpt = Checkpointer(
        workdir / "checkpoints",
        config.checkpoint.keep,
        config.checkpoint.best_metric,
        config.checkpoint.best_mode,
    )
    try:
        steps = sorted(ckpt.manager.all_steps())
        if not steps:
            raise UserError(f"{workdir}/checkpoints holds no checkpoint; train the run first.")
        if step is None:
            step = ckpt.best_step()
        elif step not in steps:
            raise UserError(
                f"{workdir}/checkpoints has no step {step}; it has {', '.join(map(str, steps))}."
            )
        state, _ = ckpt.restore(step, like)
    finally:
        ckpt.close()
    params = model_params(exp, state, frozen)
    trainable = state.params if exp.lora is not None else None
    return LoadedRun(workdir, config, exp, params, int(step), mesh, frozen, trainable)
