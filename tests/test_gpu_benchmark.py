"""benchmarks/gpu.py --tiny on CPU: the real train step (clean and FGM) and the PyTorch
peer (eager and torch.compile), each timed, in the rows the results table is made of."""

import json

import pytest
from _benchmarks import load_benchmark

KEYS = {"model", "params", "method", "remat", "batch", "seq_len", "step_s", "tokens_per_s",
        "flops_per_step", "mfu", "framework", "status", "reason"}  # fmt: skip


def test_gpu_benchmark_tiny_rows(repo, tmp_path):
    pytest.importorskip("transformers")
    bench = load_benchmark("gpu")
    # clean (remat off and on) and one adversarial method keep the compiles to three
    assert bench.main(["--tiny", "--methods", "none,fgm", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["tiny"] and report["commit"] and report["machine"]
    rows = report["rows"]
    for row in rows:
        assert set(row) >= KEYS
        assert row["model"] == "tiny" and row["seq_len"] == 64
        assert row["status"] == "ok" or row["reason"]  # a skipped row says why
    ok = [r for r in rows if r["status"] == "ok"]
    for row in ok:
        assert row["step_s"] > 0 and row["flops_per_step"] > 0 and row["mfu"] > 0
        assert row["tokens_per_s"] == pytest.approx(row["batch"] * 64 / row["step_s"])
    ours = {(r["method"], r["remat"]): r for r in ok if r["framework"] == "jax"}
    assert {m for m, _ in ours} == {"none", "fgm"}
    assert {("none", False), ("none", True)} <= set(ours)  # remat compared
    peers = {r["framework"]: r for r in ok if r["framework"] != "jax"}
    assert set(peers) == {"torch", "torch.compile"}
    # The peer has our model's shape: the same parameters and model FLOPs per step.
    clean = ours["none", False]
    for peer in peers.values():
        assert peer["params"] == clean["params"] and peer["method"] == "none"
        assert peer["flops_per_step"] / peer["batch"] == clean["flops_per_step"] / clean["batch"]
    # Adversarial rows count their extra passes (FGM: twice a clean step's FLOPs).
    fgm = next(r for (m, _), r in ours.items() if m == "fgm")
    assert fgm["flops_per_step"] / fgm["batch"] == pytest.approx(
        2 * clean["flops_per_step"] / clean["batch"]
    )
    table = (tmp_path / "gpu.md").read_text()
    assert "| tiny |" in table and "## Targets" in table and "- command:" in table


def test_out_of_memory_retries_once_at_half_the_batch_it_ran_at():
    bench = load_benchmark("gpu")
    tried = []

    def attempt(batch):
        tried.append(batch)
        row["batch"] = batch - 2  # as fit() does when XLA's plan needs a smaller batch
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")

    row = bench.base_row("jax", "tiny", "none", False, 64)
    assert bench.with_oom_retry(row, 16, attempt) is row
    assert tried == [16, 7] and row["status"] == "skipped"
    assert row["reason"].startswith("out of memory: RuntimeError")

    tried.clear()
    row = bench.base_row("jax", "tiny", "none", False, 64)

    def broken(batch):
        tried.append(batch)
        raise ValueError("a bug of this row")

    assert bench.with_oom_retry(row, 16, broken)["reason"] == "error: ValueError: a bug of this row"
    assert tried == [16]  # no retry for anything but out of memory
