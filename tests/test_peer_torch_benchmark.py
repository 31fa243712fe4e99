"""benchmarks/peer_torch.py on a tiny model: one row per (framework, method), the torch
peer computing our model's logits, and every torch loop taking a finite step."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from _benchmarks import load_benchmark

pytest.importorskip("torch")
pytest.importorskip("transformers")

KEYS = {
    "framework", "method", "num_params", "step_s", "step_s_iqr", "examples_per_s",
    "tokens_per_s", "cost", "model_flops_per_step", "model_flops_per_s", "ours_over_this",
}  # fmt: skip


@pytest.fixture(scope="module")
def bench():
    yield load_benchmark("peer_torch")
    sys.modules.pop("peer_torch", None)


@pytest.fixture(scope="module")
def tiny(bench):
    """The ``--tiny`` arguments and the shared set-up (batches, weights, torch peer)."""
    args = bench.parse_args(["--tiny"])
    return args, bench.shared_setup(args)


def test_peer_torch_writes_one_row_per_framework_and_method(bench, tmp_path):
    # One method keeps the test short (each of ours compiles a train step); the torch
    # loops of the others are checked below without compiling ours.
    argv = ["--tiny", "--steps", "2", "--methods", "pgd", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    report = json.loads((tmp_path / "peer_torch.json").read_text())
    rows = {(r["framework"], r["method"]): r for r in report["rows"]}
    assert len(rows) == len(report["rows"])
    assert set(rows) == {("llama_adv", "pgd"), ("torch", "pgd"), ("flax_plain", "none")}
    for row in rows.values():
        assert set(row) >= KEYS
        assert row["step_s"] > 0 and row["tokens_per_s"] > 0 and row["model_flops_per_step"] > 0
    assert rows["llama_adv", "pgd"]["ours_over_this"] == 1.0
    assert rows["torch", "pgd"]["ours_over_this"] > 0
    assert rows["flax_plain", "none"]["ours_over_this"] is None  # ours' none was not run
    ours = rows["llama_adv", "pgd"]["num_params"]
    assert rows["flax_plain", "none"]["num_params"] == ours
    assert rows["torch", "pgd"]["num_params"] == ours - 2  # no bias on the 2-class score
    assert report["peer_logit_gap"] < 1e-4  # the peer computes our model
    assert rows["torch", "pgd"]["attack"]["steps"] == 3
    # pgd: K + 1 forwards, K input-only backwards, one parameter backward; ours one more
    # forward (the clean reference).
    assert rows["torch", "pgd"]["cost"] == [4, 3, 1]
    assert rows["llama_adv", "pgd"]["cost"] == [5, 3, 1]
    assert "| torch | pgd |" in (tmp_path / "peer_torch.md").read_text()


@pytest.mark.parametrize("method", ["none", "fgm", "freelb", "pgd"])
def test_torch_loops_take_a_finite_step(bench, tiny, method):
    import torch

    args, setup = tiny
    config = bench.our_config(args, method)
    opts = bench.attack_options(bench.build_experiment(config), config)
    model = setup["torch_model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.zero_grad(set_to_none=True)
    loss = bench.TORCH_STEPS[method](model, setup["torch_batches"][0], opts)
    assert np.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # Every loop restores what it perturbs: the weights are untouched before the update.
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
