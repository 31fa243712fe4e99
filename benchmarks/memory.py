"""Per-device memory of the train step at LLaMA-3 shapes, from XLA's compiled memory analysis.

Nothing is allocated: the state and the batch are abstract (shapes, dtypes, shardings),
and the real jitted train step is lowered and compiled for them over ``--devices``
simulated devices with ``mesh.fsdp = --devices``; ``memory_analysis()`` of the compiled
program then gives each device's argument, output, temporary and aliased (donated) bytes.
Per-device total = arguments + outputs - aliased + temporaries (what the device must
hold at the step's peak; donated state buffers are reused by the new state). One sequence
per device, a language-modelling task (next-token loss over every position).

    python benchmarks/memory.py --out results/memory
    python benchmarks/memory.py --presets tiny --methods none,fgm --seq-len 64 --out /tmp/m

Writes ``memory.json`` (one row per setting: ``preset``, ``lora_rank``, ``method``,
``devices``, ``seq_len``, ``remat``, ``bytes_per_device`` and the parts) and ``memory.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

GIB = 1024**3


def _setup_devices(count: int) -> None:
    # Before jax is imported: the simulated CPU devices of the mesh.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}"


def measure(preset: str, lora_rank: int, method: str, steps: int, devices: int, seq_len: int,
            remat: bool) -> dict:  # fmt: skip
    """Compiles one setting's train step and returns its row of ``memory.json``."""
    import jax
    import jax.numpy as jnp

    from llama_adv.adversarial import build_method
    from llama_adv.config import get_default_config
    from llama_adv.models import build_model
    from llama_adv.models.lora import Lora
    from llama_adv.models.presets import apply_preset
    from llama_adv.tasks import build_task
    from llama_adv.train.loop import state_builder, state_shardings
    from llama_adv.train.mesh import batch_sharded, make_mesh, replicated
    from llama_adv.train.optimizer import make_optimizer, make_schedule
    from llama_adv.train.partitioning import param_shardings
    from llama_adv.train.setup import Experiment
    from llama_adv.train.step import make_train_step

    config = get_default_config()
    model_config = config.model
    model_config.preset = preset
    model_config.remat = remat
    model_config.scan_layers = True  # compile time flat in depth
    model_config.dtype = "bfloat16"
    model_config.lora.rank = lora_rank
    model_config.lora.alpha = float(2 * lora_rank or 8)
    model_config.lora.targets = ("q", "k", "v", "o", "gate", "up", "down")
    model_config.lora.base_dtype = "bfloat16"
    vocab = apply_preset(model_config).vocab_size or 32000
    config.adv.method = method
    if steps:
        config.adv.steps = steps
    task = build_task("lm")
    model = build_model(model_config, head="lm", vocab_size=vocab, num_classes=0)
    exp = Experiment(None, task, model, build_method(config.adv, task, 1000),
                     Lora.from_config(model_config.lora))  # fmt: skip
    mesh = make_mesh(devices, {"data": 1, "fsdp": devices, "tensor": 1})
    b = devices  # one sequence per device
    batch = {
        "inputs": jax.ShapeDtypeStruct((b, seq_len), jnp.int32),
        "targets": jax.ShapeDtypeStruct((b, seq_len), jnp.int32),
        "target_weight": jax.ShapeDtypeStruct((b, seq_len), jnp.float32),
        "weight": jax.ShapeDtypeStruct((b,), jnp.float32),
        "example_id": jax.ShapeDtypeStruct((b,), jnp.int32),
    }
    key = jax.random.key(0)
    params = jax.eval_shape(model.init, key, batch)
    frozen = None
    if exp.lora is not None:
        params, frozen = jax.eval_shape(exp.lora.split, key, params)
    schedule = make_schedule(config.optim, 1000)
    optimizer = make_optimizer(config.optim, schedule)
    build = state_builder(exp, optimizer, num_examples=100_000, batch=batch, seed=0)
    state = jax.eval_shape(build, params, frozen)
    shardings = state_shardings(state, mesh)

    def place(tree, where):
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, where
        )

    state = place(state, shardings)
    frozen = None if frozen is None else place(frozen, param_shardings(frozen, mesh))
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharded(mesh))
             for k, v in batch.items()}  # fmt: skip
    step = make_train_step(model, task, exp.method, optimizer, schedule, mesh, config.adv,
                           state_shardings=shardings, lora=exp.lora)  # fmt: skip
    rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated(mesh))
    start = time.perf_counter()
    compiled = step.lower(state, batch, rng, frozen).compile()
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    parts = {
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "alias_bytes": int(stats.alias_size_in_bytes),
        "temp_bytes": int(stats.temp_size_in_bytes),
    }
    total = (parts["argument_bytes"] + parts["output_bytes"] - parts["alias_bytes"]
             + parts["temp_bytes"])  # fmt: skip
    return {
        "preset": preset, "lora_rank": lora_rank, "method": method,
        "steps": steps or None, "devices": devices, "seq_len": seq_len, "remat": remat,
        "bytes_per_device": total, **parts, "compile_sec": round(seconds, 1),
    }  # fmt: skip


def _settings(args) -> list[tuple]:
    rows = []
    for preset in args.presets.split(","):
        for rank in (int(r) for r in args.lora_ranks.split(",")):
            for entry in args.methods.split(","):
                method, _, k = entry.partition(":")
                for remat in {"both": (False, True), "on": (True,), "off": (False,)}[args.remat]:
                    rows.append((preset, rank, method, int(k or 0), remat))
    return rows


def _markdown(rows: list[dict], command: str, meta: dict) -> str:
    lines = [
        "# Train-step memory per device (XLA memory analysis, nothing allocated)",
        "",
        f"- command: `{command}`",
        f"- commit: {meta['commit']}; made on {meta['machine']}, {meta['date']}",
        f"- {rows[0]['devices'] if rows else '?'} simulated devices, mesh.fsdp = devices, "
        "one sequence per device, bfloat16 compute, float32 trained parameters and Adam "
        "state; LoRA: all seven projections, base stored in bfloat16. Total = arguments + "
        "outputs - donated (aliased) + temporaries.",
        "",
        "| preset | LoRA rank | method | seq | remat | GiB / device | args | temps | compile s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["method"] + (f"-{r['steps']}" if r["steps"] else "")
        lines.append(
            f"| {r['preset']} | {r['lora_rank'] or 'full'} | {name} | {r['seq_len']} | "
            f"{'yes' if r['remat'] else 'no'} | {r['bytes_per_device'] / GIB:.2f} | "
            f"{r['argument_bytes'] / GIB:.2f} | {r['temp_bytes'] / GIB:.2f} | "
            f"{r['compile_sec']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="llama3_1b,llama3_8b")
    parser.add_argument("--lora-ranks", default="0,64", help="0 = full fine-tuning")
    parser.add_argument("--methods", default="none,fgm,freelb:3,pgd:3",
                        help="method[:ascent steps], comma-separated")  # fmt: skip
    parser.add_argument("--remat", choices=("both", "on", "off"), default="both")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--out", default="results/memory")
    args = parser.parse_args(argv)
    _setup_devices(args.devices)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from llama_adv.experiments.provenance import git_commit, machine

    rows = []
    for preset, rank, method, steps, remat in _settings(args):
        row = measure(preset, rank, method, steps, args.devices, args.seq_len, remat)
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    meta = {
        "commit": git_commit(),
        "machine": f"{info.get('cpu', platform.processor())}",
        "date": datetime.date.today().isoformat(),
    }
    command = "python benchmarks/memory.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    (out / "memory.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / "memory.md").write_text(_markdown(rows, command.strip(), meta))
    print(f"wrote {out / 'memory.json'} and {out / 'memory.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
