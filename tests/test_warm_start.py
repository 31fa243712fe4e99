"""Pre-train, then fine-tune: ``train.init_from`` starts a run from another run's (or an
imported) checkpoint with exactly its body parameters and a freshly initialised head."""

import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from llama_adv.errors import UserError
from llama_adv.train import train_and_evaluate
from llama_adv.train.loop import warm_started_params
from llama_adv.train.mesh import make_mesh
from llama_adv.train.setup import build_experiment
from llama_adv.train.warm_start import resolve_source

SMALL = ("model.d_model=32", "model.num_layers=1", "model.num_heads=2", "model.d_ff=64",
         "train.num_steps=2", "train.log_every=1", "train.progress_bar=False",
         "eval.max_examples=16", "eval.batch_size=16", "eval.attack.method=none")  # fmt: skip


def _flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(k.key for k in path): np.asarray(v) for path, v in leaves}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A decoder language model trained two steps on the synthetic corpus."""
    from llama_adv.config import load_config

    workdir = tmp_path_factory.mktemp("lm")
    config = load_config(
        f"{Path(__file__).resolve().parents[1] / 'configs' / 'quickstart.py'}:tiny",
        (*SMALL, "data.name=synthetic_lm", "task.name=lm", "checkpoint.best_metric=loss",
         "checkpoint.best_mode=min"),
    )  # fmt: skip
    train_and_evaluate(config, workdir)
    with ocp.StandardCheckpointer() as reader:
        params = reader.restore((workdir / "checkpoints" / "2" / "state").absolute())["params"]
    return workdir, _flat(params)


def test_finetune_starts_from_the_pretrained_body(quickstart_config, pretrained, tmp_path):
    source, body = pretrained
    config = quickstart_config("tiny", *SMALL, f"train.init_from={source}")
    params = warm_started_params(build_experiment(config), config, make_mesh(), tmp_path)
    ours = _flat(params)
    report = json.loads((tmp_path / "init_report.json").read_text())
    assert report["initialized"] == [k for k in ours if k not in body]
    assert report["initialized"] and all("classifier" in k for k in report["initialized"])
    assert sorted(report["loaded"]) == sorted(k for k in ours if k in body)
    for name in report["loaded"]:
        np.testing.assert_array_equal(ours[name], body[name])
    assert report["source"].endswith("checkpoints/2")

    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["step"] == 2
    assert (tmp_path / "run" / "init_report.json").is_file()


def test_a_checkpoint_folder_is_a_source_too(pretrained):
    source, _ = pretrained
    assert resolve_source(str(source / "checkpoints" / "2")) == source / "checkpoints" / "2"


def test_bad_sources_fail_before_anything_is_written(quickstart_config, pretrained, tmp_path):
    config = quickstart_config("tiny", *SMALL, f"train.init_from={tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match=r"train.init_from=.*nowhere.*import-hf"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()

    source, _ = pretrained
    wider = quickstart_config("tiny", *SMALL, "model.d_model=48", f"train.init_from={source}")
    with pytest.raises(UserError, match=r"shapes differ: .*d_model=32 \(here 48\)"):
        warm_started_params(build_experiment(wider), wider, make_mesh(), tmp_path)
