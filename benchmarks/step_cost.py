"""Step cost of every adversarial method: measured against clean training and theory.

For each method, on one model preset and sequence length: compile time, median step time,
examples/s and tokens/s, the ratio to clean (``none``) training, the theoretical ratio
from the method's declared passes (:meth:`Method.theoretical_ratio`: forwards, input-only
backwards and parameter backwards weighed 1, 1, 2), achieved FLOP/s from the model's
FLOPs-per-token function scaled by those passes, and its fraction of a peak: on CPU the
float32 matrix-multiply rate measured here, on GPU the device's bf16 peak (``--peak``).

    python benchmarks/step_cost.py --config configs/quickstart.py --seq-len 24 \
        --batch-size 64 --steps 20

Writes ``step_cost.json`` and ``step_cost.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.adversarial import METHODS
from llama_adv.config import load_config
from llama_adv.data.pipeline import TrainStream
from llama_adv.models import count_params, flops_per_token
from llama_adv.models.presets import apply_preset
from llama_adv.train.loop import create_state
from llama_adv.train.mesh import make_mesh, to_global
from llama_adv.train.optimizer import make_optimizer, make_schedule
from llama_adv.train.setup import build_experiment
from llama_adv.train.step import make_train_step

ALL = ("none", "random", "fgsm", "fgm", "pgd", "freeat", "freelb", "smart", "vat", "alum",
       "trades", "adaptive")  # fmt: skip


def matmul_peak(size: int = 1024, repeats: int = 20) -> float:
    """Measured float32 matmul rate (FLOP/s) of this backend: a best-of-N ``size^3`` dot."""
    a = jnp.ones((size, size), jnp.float32)
    dot = jax.jit(lambda x: x @ x)
    dot(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def time_calls(
    call: Callable[[int], Any],
    warmup: int,
    steps: int,
    *,
    sync: Callable[[Any], Any] = jax.block_until_ready,
    budget_s: float = math.inf,
) -> list[float]:
    """Seconds of each timed ``call(i)``: ``warmup`` untimed calls, then up to ``steps``
    timed ones, each ended by ``sync(result)`` (the device has finished). Timing stops
    early, after at least one timed call, once ``budget_s`` seconds of them have passed."""
    for i in range(warmup):
        sync(call(i))
    times: list[float] = []
    for i in range(warmup, warmup + steps):
        start = time.perf_counter()
        sync(call(i))
        times.append(time.perf_counter() - start)
        if sum(times) >= budget_s:
            break
    return times


def measure(method: str, args) -> dict:
    """Compiles and times ``args.steps`` train steps of ``method``."""
    config = load_config(f"{args.config}:method={method}", args.override)
    config.data.max_length = args.seq_len
    config.train.batch_size = args.batch_size
    config.data.num_train = max(config.data.num_train, args.batch_size * 4)
    exp = build_experiment(config)
    mesh = make_mesh()
    schedule = make_schedule(config.optim, config.train.num_steps)
    optimizer = make_optimizer(config.optim, schedule)
    state = create_state(exp, config, optimizer, mesh)
    step = make_train_step(exp.model, exp.task, exp.method, optimizer, schedule, mesh, config.adv)
    stream = TrainStream(exp.dataset.split("train"), args.batch_size, 0)
    batches = [to_global(stream.batch(i), mesh) for i in range(4)]
    rng = jax.random.key(0)

    start = time.perf_counter()
    compiled = step.lower(state, batches[0], rng).compile()
    compile_s = time.perf_counter() - start
    metrics = None

    def call(i: int):
        nonlocal state, metrics
        state, metrics = compiled(state, batches[i % 4], jax.random.fold_in(rng, i))
        return state, metrics

    times = time_calls(call, args.warmup, args.steps)
    median = statistics.median(times)
    tokens = args.batch_size * args.seq_len
    per_token = flops_per_token(
        config.model,
        args.seq_len,
        exp.dataset.vocab_size,
        head=exp.task.head,
        num_classes=config.task.num_classes or exp.dataset.num_classes,
    )
    # flops_per_token is forward + backward = 3 forward units; the method runs
    # theoretical_ratio() times that.
    flops = per_token * tokens * exp.method.theoretical_ratio()
    memory = None
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        memory = stats["peak_bytes_in_use"]
    return {
        "method": method,
        "passes": list(exp.method.passes),
        "cost": list(exp.method.cost),
        "theoretical_ratio": exp.method.theoretical_ratio(),
        "compile_s": compile_s,
        "step_s": median,
        "step_s_iqr": [float(np.percentile(times, 25)), float(np.percentile(times, 75))],
        "examples_per_s": args.batch_size / median,
        "tokens_per_s": tokens / median,
        "flops_per_step": flops,
        "flops_per_s": flops / median,
        "peak_memory_bytes": memory,
        "num_params": count_params(state.params),
        "final_loss": float(metrics["loss"]),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def machine() -> str:
    device = jax.devices()[0]
    return (
        f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPU cores "
        f"(visible), jax {jax.__version__} on {device.platform} ({device.device_kind}), "
        f"{jax.device_count()} device(s)"
    ).replace("  ", " ")


def markdown(header: dict, rows: list[dict]) -> str:
    lines = [
        "# Step cost per adversarial method",
        "",
        f"- command: `{header['command']}`",
        f"- commit: `{header['commit']}`",
        f"- machine: {header['machine']}",
        f"- date: {header['date']}",
        f"- model: {header['model']}, {header['num_params']:,} parameters; batch "
        f"{header['batch_size']}, sequence length {header['seq_len']}; median of "
        f"{header['steps']} steps after {header['warmup']} warm-up steps",
        f"- peak: {header['peak_flops'] / 1e9:.1f} GFLOP/s ({header['peak_kind']})",
        "- theory = (forwards + input-only backwards + 2 x parameter backwards) / 3, "
        "from each method's declared cost; passes = (forward, backward) as METHODS.md counts",
        "",
        "| method | passes | theory | measured | meas./theory | step ms | compile s "
        "| examples/s | tokens/s | GFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['passes'][0]}/{r['passes'][1]} "
            f"| {r['theoretical_ratio']:.2f} | {r['ratio_to_clean']:.2f} "
            f"| {r['ratio_to_clean'] / r['theoretical_ratio']:.2f} | {1e3 * r['step_s']:.1f} "
            f"| {r['compile_s']:.1f} | {r['examples_per_s']:.0f} | {r['tokens_per_s']:.0f} "
            f"| {r['flops_per_s'] / 1e9:.2f} | {100 * r['fraction_of_peak']:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quickstart.py")
    parser.add_argument("--override", action="append", default=[], help="key=value")
    parser.add_argument("--methods", default=",".join(ALL))
    parser.add_argument("--seq-len", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak", type=float, default=0.0, help="peak FLOP/s; 0 = measure")
    parser.add_argument("--out", default="results/step_cost")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        METHODS.get(m, field="--methods")
    peak = args.peak or matmul_peak()
    rows = []
    for m in methods:
        rows.append(measure(m, args))
        print(f"{m}: {1e3 * rows[-1]['step_s']:.1f} ms/step", flush=True)
    clean = next((r["step_s"] for r in rows if r["method"] == "none"), rows[0]["step_s"])
    for r in rows:
        r["ratio_to_clean"] = r["step_s"] / clean
        r["fraction_of_peak"] = r["flops_per_s"] / peak
    config = load_config(args.config, args.override)
    model = apply_preset(config.model)  # the sizes the preset resolves to
    header = {
        "command": shlex.join(["python", *sys.argv]),
        "commit": git_commit(),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": f"{model.name} preset={model.preset or '-'} "
        f"d_model={model.d_model} layers={model.num_layers}",
        "num_params": rows[0]["num_params"],
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "warmup": args.warmup,
        "peak_flops": peak,
        "peak_kind": "given" if args.peak else "measured float32 matmul, 1024^3",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_cost.json").write_text(json.dumps({**header, "rows": rows}, indent=2) + "\n")
    (out / "step_cost.md").write_text(markdown(header, rows))
    print(markdown(header, rows))


if __name__ == "__main__":
    main()
