"""Starting a run from pre-trained parameters (``train.init_from``): pre-train, then fine-tune.

The source is one of

- another run's workdir: its best checkpoint (the latest when none was ranked);
- one checkpoint folder of a run, ``RUN/checkpoints/STEP``;
- a directory written by ``llama-adv import-hf`` (``config.json`` + ``params.msgpack``).

Parameters are matched by their path in the tree. Those present in both with equal shapes
are copied (the body); those only in the new model keep their fresh initialisation (a new
task head); those only in the source are dropped (an LM head the classifier does not use).
A parameter present in both with different shapes means the two models differ, which is
an error naming the parameters and the model fields that differ.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.errors import UserError
from llama_adv.models.base import Params
from llama_adv.models.hf_import import PARAMS_FILE, load_imported

ARCHITECTURE_FIELDS = (
    "name", "vocab_size", "d_model", "num_layers", "num_decoder_layers", "num_heads",
    "num_kv_heads", "head_dim", "d_ff", "tie_embeddings", "scan_layers", "relative_buckets",
)  # fmt: skip


@dataclasses.dataclass
class WarmStartReport:
    """What :func:`warm_start` did; written to ``RUN/init_report.json``.

    Attributes:
      source: the resolved source path (a checkpoint step folder or an imported dir).
      loaded: parameter paths copied from the source.
      initialized: parameter paths only the new model has (fresh initialisation).
      ignored: parameter paths only the source has (not used).
      loaded_scalars: number of scalars copied.
    """

    source: str
    loaded: list[str]
    initialized: list[str]
    ignored: list[str]
    loaded_scalars: int

    def summary(self) -> str:
        new = ", ".join(self.initialized) or "none"
        line = (
            f"init_from {self.source}: loaded {len(self.loaded)} arrays "
            f"({self.loaded_scalars:,} parameters); newly initialised: {new}"
        )
        return line + (f"; unused from source: {', '.join(self.ignored)}" if self.ignored else "")


def _name(path) -> str:
    """``"block_0/mlp/up/kernel"`` for a tree path."""
    return "/".join(str(getattr(k, "key", k)) for k in path)


def _flatten(params: Params) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return {_name(path): leaf for path, leaf in flat}


def _run_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _checkpoint_step(run: Path) -> Path:
    """The best (else latest) step folder of the run in ``run``, from its config's ranking."""
    from llama_adv.train.checkpoint import Checkpointer

    ranking = _run_config(run).get("checkpoint", {})
    ckpt = Checkpointer(
        run / "checkpoints", keep=1, best_metric=ranking.get("best_metric", ""),
        best_mode=ranking.get("best_mode", "max"), read_only=True,
    )  # fmt: skip
    try:
        step = ckpt.best_step()
    finally:
        ckpt.close()
    if step is None:
        raise UserError(f"train.init_from={run}: {run}/checkpoints holds no checkpoint.")
    return run / "checkpoints" / str(step)


def resolve_source(spec: str) -> Path:
    """The checkpoint step folder or imported directory ``spec`` names.

    Raises:
      UserError: the path does not exist or holds neither a run nor an imported checkpoint.
    """
    path = Path(spec).expanduser()
    if (path / PARAMS_FILE).is_file():
        return path
    if (path / "checkpoints").is_dir():
        return _checkpoint_step(path)
    if (path / "state").is_dir() and path.parent.name == "checkpoints":
        return path
    raise UserError(
        f"train.init_from={spec!r} is not a run workdir (with checkpoints/), a checkpoint "
        f"folder (RUN/checkpoints/STEP) or an `llama-adv import-hf --out` directory "
        f"(with {PARAMS_FILE})."
    )


def load_source(source: Path) -> tuple[Params, dict[str, Any]]:
    """``(params, model config section)`` of a resolved source."""
    if (source / PARAMS_FILE).is_file():
        config, params = load_imported(source)
        return params, config.get("model", {})
    import orbax.checkpoint as ocp

    # Restored as saved (no target tree): the source's method and optimizer state may have
    # any structure, and only its parameters are wanted.
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore((source / "state").absolute())
    return state["params"], _run_config(source.parent.parent).get("model", {})


def _model_differences(source: dict[str, Any], target: dict[str, Any]) -> str:
    diffs = [
        f"{k}={source[k]!r} (here {target.get(k)!r})"
        for k in ARCHITECTURE_FIELDS
        if k in source and source[k] != target.get(k) and not (k == "vocab_size" and source[k] == 0)
    ]
    return "; source model has " + ", ".join(diffs) if diffs else ""


def merge_params(
    init: Params, source: Params, source_model: dict[str, Any], target_model: dict[str, Any]
) -> tuple[Params, list[str], list[str], list[str]]:
    """Copies ``source`` leaves into ``init`` by path: ``(params, loaded, initialized, ignored)``.

    Raises:
      UserError: a path present in both with different shapes, or no path in common.
    """
    ours, theirs = _flatten(init), _flatten(source)
    mismatched = [
        f"{k} {tuple(np.shape(theirs[k]))} vs {tuple(np.shape(v))}"
        for k, v in ours.items()
        if k in theirs and np.shape(theirs[k]) != np.shape(v)
    ]
    loaded = [k for k in ours if k in theirs and not any(m.startswith(k + " ") for m in mismatched)]
    if mismatched or not loaded:
        what = "no parameter name in common" if not mismatched else "shapes differ: "
        raise UserError(
            "train.init_from: the source does not fit this model ("
            + what
            + "; ".join(mismatched[:8])
            + ")"
            + _model_differences(source_model, target_model)
            + ". Set the model section to the source's architecture."
        )
    flat, treedef = jax.tree_util.tree_flatten_with_path(init)
    leaves = [
        jnp.asarray(theirs[name], leaf.dtype) if (name := _name(path)) in theirs else leaf
        for path, leaf in flat
    ]
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    initialized = [k for k in ours if k not in theirs]
    ignored = [k for k in theirs if k not in ours]
    return params, loaded, initialized, ignored


def warm_start(
    init: Params, spec: str, target_model: dict[str, Any]
) -> tuple[Params, WarmStartReport]:
    """``init`` with every parameter the source of ``spec`` has (see module docstring)."""
    source = resolve_source(spec)
    params, source_model = load_source(source)
    merged, loaded, initialized, ignored = merge_params(init, params, source_model, target_model)
    ours = _flatten(init)
    scalars = sum(int(np.size(ours[k])) for k in loaded)
    return merged, WarmStartReport(str(source), loaded, initialized, ignored, scalars)
