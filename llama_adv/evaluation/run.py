"""``evaluate_run(workdir)``: a trained run's task metrics on any split of its dataset, or
on a file in the dataset's format, computed exactly as the training run's evaluation
(:func:`llama_adv.train.evaluate.evaluate`: same batches, attack and random stream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from llama_adv.errors import UserError
from llama_adv.train.evaluate import evaluate, make_eval_step
from llama_adv.train.loop import EVAL


def evaluate_run(
    workdir: str | Path,
    *,
    split: str | None = None,
    file: str | Path | None = None,
    step: int | None = None,
    overrides: tuple[str, ...] = (),
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluates the run in ``workdir`` at ``step`` (default: the best checkpoint, else the
    latest) on ``split`` (default ``eval.split``) or on ``file``
    (:mod:`llama_adv.evaluation.files`); writes the result to ``out`` (JSON) when given.

    Returns:
      ``{"workdir", "step", "split" | "file", "eval": {metric: value}}``; ``eval`` holds
      what the training run's evaluation logs (``metrics.jsonl`` rows of kind ``eval``).

    Raises:
      UserError: both ``split`` and ``file``, not a run, no checkpoint (at ``step``), an
        unknown split, a missing or malformed file.
    """
    from llama_adv.evaluation.files import check_file, split_from_file
    from llama_adv.robustness.loading import load_run, run_config

    if split is not None and file is not None:
        raise UserError("evaluate takes --split NAME or --file F, not both.")
    config = run_config(workdir, overrides)
    if file is not None:  # a missing file fails before the (slow) checkpoint load
        check_file(file, config.task.name, config)
    run = load_run(workdir, config=config, step=step)
    dataset = run.exp.dataset
    if file is not None:
        data, where = split_from_file(file, dataset, config), {"file": str(file)}
    else:
        name = split or config.eval.split
        data, where = dataset.split(name), {"split": name}
    eval_step = make_eval_step(run.exp.model, run.exp.task, config.eval.attack)
    # The training loop's evaluation stream: its state's key is the seed's, never advanced.
    rng = jax.random.fold_in(jax.random.key(config.train.seed), EVAL)
    metrics = evaluate(eval_step, run.params, data, run.mesh, config.eval, rng)
    result = {"workdir": str(workdir), "step": run.step, **where, "eval": metrics}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result
