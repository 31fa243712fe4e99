"""GPU throughput and MFU of clean and adversarial training, beside a PyTorch peer.

What it measures, on one device, sequence length 2048, next-token language modelling on
random tokens: tokens/s and model-FLOPs utilisation of the train step for

- two decoders: ``medium`` (a ~350M decoder: 341M parameters with a 32,000-token
  vocabulary) and ``llama3_1b`` (Llama-3.2-1B's shape: 1.24B parameters, 128,256 tokens),
  both model presets (``llama_adv/models/presets.py``);
- our jitted train step (built and timed as ``benchmarks/step_cost.py`` does: compiled
  once, warm-up steps, then the median of timed steps) for methods ``none`` (clean),
  ``fgm``, ``freelb`` (K=3) and ``pgd`` (K=3), with remat off and on (``model.remat``;
  blocks under ``nn.scan``, ``model.scan_layers``), bfloat16 compute (``model.dtype``)
  with float32 parameters and AdamW state (the config has no parameter-dtype field);
- the PyTorch peer ``transformers.LlamaForCausalLM`` of the same shape (its config from
  the Hugging Face exporter's mapping, so the parameter counts agree), float32 parameters
  under bfloat16 autocast (the same mixed precision), eager and ``torch.compile``, a clean
  step: forward + backward + gradient clipping + AdamW (fused on CUDA), as ours.

tokens/s = batch x seq_len / median step time. FLOPs per step = ``flops_per_token`` x
tokens x the method's ``theoretical_ratio()`` (its forwards and backwards, as
``step_cost.py`` counts them). MFU = FLOP/s / peak: the dense bfloat16 peak of the
device (``PEAKS``, by ``device_kind``; ``--peak`` overrides), on CPU the float32 matmul
rate measured by ``step_cost.matmul_peak`` (n/a where no peak is known).

Targets (issue 13, item 9), checked in ``gpu.md``: clean MFU >= 45%; an adversarial step
>= 90% of the clean step's MFU (its extra FLOPs counted); our clean tokens/s >= 2x the
peer's (the faster of eager and compiled).

Budget: the whole script stays under ``--deadline`` seconds (450, under the 8 minutes
asked for). One worker process per (model, framework) runs in turn, ours then the peer's
for each model (JAX and torch each keep a GPU memory pool, so they never share a
process); each gets a share of the time left (``WORKER_WEIGHT``), starts a row only if
it expects to finish it, and is stopped at its share's end. Rows are time-boxed
(``--warmup`` steps, then up to ``--steps`` timed steps or ``--row-seconds``). Our rows
go clean with remat off and on first, then the adversarial methods with the remat whose
clean step was faster, then with the other. Each starts from the batch in ``BATCHES``
(per model and remat) and shrinks it to fit the device from XLA's memory analysis of
the step compiled for shapes, before anything is allocated (once more at half the batch
on an out-of-memory error); a row that still does not fit is skipped with the reason in
the table, as are rows the deadline leaves out. The compile dominates a row: on a
machine kept between runs, ``--compile-cache DIR`` (JAX's persistent cache) lets a
second run fill rows the first had no time for.

Run, from the repository root, on one H100/H200::

    python benchmarks/gpu.py --out results/gpu

``--tiny`` swaps in the tiny decoder preset and sequence length 64, for CPU: 2 timed
steps, the adversarial rows with the faster remat only (``--adv-remat best``), XLA's
backend optimisation off (compile time halves); the peer runs on CPU only then, its
``torch.compile`` with the ``aot_eager`` backend (inductor's C++ build takes minutes on
CPU). 60-80 s on this project's two CPU cores shared with other work::

    python benchmarks/gpu.py --tiny --out /tmp/gpu_tiny

Writes ``gpu.json`` (header and one row per setting: model, params, method, remat,
batch, seq_len, step_s, tokens_per_s, flops_per_step, mfu, framework, and status /
reason) and ``gpu.md`` under ``--out``.

Carrying it to a GPU machine: the script needs jax (with CUDA), flax, optax,
orbax-checkpoint and numpy (the train layer), ml_collections (the config system:
required), and torch + transformers for the peer rows (with what those pull in: absl-py,
PyYAML, tqdm); not tensorflow, tensorflow-datasets or tensorboardX, none of which is
imported. ml_collections is pure Python (its dependencies absl-py and PyYAML come with
orbax and transformers): where the machine lacks it, carry the package beside the
repository, e.g. from this project's venv::

    mkdir -p .gpu_deps && cp -r .venv/lib/python3*/site-packages/ml_collections .gpu_deps/
    PYTHONPATH=.gpu_deps python benchmarks/gpu.py --out results/gpu   # on the GPU machine

(or carry its wheel, ``pip download ml-collections --no-deps``, and ``pip install
--no-deps`` it there).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run as a script: the package from this checkout, step_cost's helpers beside this file.
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import jax  # noqa: E402
import numpy as np  # noqa: E402
from step_cost import git_commit, machine, matmul_peak, time_calls  # noqa: E402

from llama_adv.adversarial import METHODS as REGISTRY  # noqa: E402
from llama_adv.adversarial import build_method, validate_adv_config  # noqa: E402
from llama_adv.config import get_default_config  # noqa: E402
from llama_adv.models import build_model, count_params, flops_per_token  # noqa: E402
from llama_adv.models.presets import apply_preset  # noqa: E402
from llama_adv.special_tokens import BOS_ID, EOS_ID, PAD_ID  # noqa: E402
from llama_adv.tasks import build_task  # noqa: E402
from llama_adv.train.loop import state_builder, state_shardings  # noqa: E402
from llama_adv.train.mesh import batch_sharded, make_mesh, replicated, to_global  # noqa: E402
from llama_adv.train.optimizer import make_optimizer, make_schedule  # noqa: E402
from llama_adv.train.setup import Experiment  # noqa: E402
from llama_adv.train.step import make_train_step  # noqa: E402

GIB = 1024**3
MODELS = ("medium", "llama3_1b")
METHODS = ("none", "fgm", "freelb", "pgd")
ASCENT_STEPS = {"freelb": 3, "pgd": 3}  # K of the methods that take one
DEFAULT_VOCAB = 32000  # presets without their own vocabulary (medium)
TINY_VOCAB = 512
SEQ_LEN, TINY_SEQ_LEN = 2048, 64
# Dense bfloat16 peak FLOP/s by a substring of device_kind; the first match wins.
PEAKS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),  # also GH200
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5", 459e12),  # v5p
    ("TPU v6 lite", 918e12),
)
# First batch of our rows per (model, remat), shrunk to fit the device (memory analysis).
BATCHES = {
    ("medium", False): 8,
    ("medium", True): 16,
    ("llama3_1b", False): 4,
    ("llama3_1b", True): 8,
    ("tiny", False): 4,
    ("tiny", True): 4,
}
REMATS = {"both": (False, True), "off": (False,), "on": (True,)}
PEER_MODES = ("eager", "compile")
WORKER_WEIGHT = {"jax": 2.0, "torch": 1.0}  # shares of the time left, per worker
KILL_GRACE_S = 15.0  # a worker may overrun its share by this much (its last row)
MEMORY_HEADROOM = 0.95  # of the device's free memory a step may plan to use
# --tiny: halves XLA's compile time on CPU (the tiny rows are a smoke test, not a measure)
TINY_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


# -- settings ------------------------------------------------------------------------------


def our_config(model: str, method: str, remat: bool, scan: bool):
    """The config of one of our rows: the preset, bf16 compute, the LM task, the method."""
    config = get_default_config()
    config.model.preset = model
    config.model.dtype = "bfloat16"
    config.model.remat = remat
    config.model.scan_layers = scan
    config.task.name = "lm"
    config.adv.method = method
    if method in ASCENT_STEPS:
        config.adv.steps = ASCENT_STEPS[method]
    return config


def vocab_of(model: str) -> int:
    """The preset's vocabulary, else :data:`DEFAULT_VOCAB` (:data:`TINY_VOCAB` for tiny)."""
    config = get_default_config().model
    config.preset = model
    return apply_preset(config).vocab_size or (TINY_VOCAB if model == "tiny" else DEFAULT_VOCAB)


def flops_per_step(model: str, seq_len: int, batch: int, ratio: float = 1.0) -> float:
    """Model FLOPs of one step: ``flops_per_token`` x tokens x the method's ratio."""
    config = our_config(model, "none", False, True)
    return flops_per_token(config.model, seq_len, vocab_of(model)) * batch * seq_len * ratio


def peak_of(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of ``device_kind`` from :data:`PEAKS`; None if unknown."""
    for name, peak in PEAKS:
        if name.lower() in device_kind.lower():
            return peak
    return None


def random_batch(batch: int, seq_len: int, vocab: int, seed: int) -> dict[str, np.ndarray]:
    """A next-token LM batch of random tokens (never padding or special ids)."""
    tokens = np.random.default_rng(seed).integers(4, vocab, (batch, seq_len + 1), np.int32)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "target_weight": np.ones((batch, seq_len), np.float32),
        "weight": np.ones((batch,), np.float32),
        "example_id": np.arange(batch, dtype=np.int32),
    }


def base_row(framework: str, model: str, method: str, remat: bool, seq_len: int) -> dict:
    """A row not (yet) measured: ``status`` skipped, ``reason`` empty until known."""
    return {
        "framework": framework, "model": model, "params": None, "method": method,
        "remat": remat, "batch": None, "seq_len": seq_len, "step_s": None,
        "tokens_per_s": None, "flops_per_step": None, "mfu": None, "status": "skipped",
        "reason": "",
    }  # fmt: skip


def key_of(row: dict) -> tuple:
    return (row["framework"], row["model"], row["method"], row["remat"])


def finish(row: dict, times: list[float], batch: int, flops: float) -> dict:
    """Fills a measured row's timing fields from the timed steps' seconds."""
    median = statistics.median(times)
    row.update(status="ok", reason="", batch=batch, step_s=median,
               step_s_iqr=[float(np.percentile(times, 25)), float(np.percentile(times, 75))],
               steps_timed=len(times), tokens_per_s=batch * row["seq_len"] / median,
               flops_per_step=flops)  # fmt: skip
    return row


def is_oom(error: BaseException) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return "resource_exhausted" in text or "out of memory" in text or "outofmemory" in text


def failure(error: BaseException) -> str:
    """A skipped row's reason from an exception: out of memory, or its first line."""
    lines = str(error).strip().splitlines() or [""]
    kind = "out of memory" if is_oom(error) else "error"
    return f"{kind}: {type(error).__name__}: {lines[0][:200]}"


class RowFailed(Exception):
    """A row that cannot run (its reason); the worker goes on with the next."""


def with_oom_retry(row: dict, batch: int, attempt: Callable[[int], dict]) -> dict:
    """``attempt(batch)``, the measured row; on an out-of-memory error once more at half
    the batch it ran at (``row["batch"]`` once set). A failure is returned as ``row``,
    skipped, with its reason."""
    for retry in range(2):
        try:
            return attempt(batch)
        except RowFailed as failed:
            row["reason"] = str(failed)
            return row
        except Exception as error:  # out of memory, or a failure of this row alone
            row["reason"] = failure(error)
            batch = row["batch"] or batch
            if not is_oom(error) or batch == 1 or retry == 1:
                return row
            batch //= 2
        finally:
            gc.collect()
    return row


# -- our step ------------------------------------------------------------------------------


def _structs(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def _tree_bytes(tree: Any) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree))


class JaxSetting:
    """One of our rows' model, method, optimizer and step, at any batch size, on a
    one-device mesh."""

    def __init__(self, model: str, method: str, remat: bool, args):
        self.name, self.seq_len, self.vocab = model, args.seq_len, vocab_of(model)
        self.config = our_config(model, method, remat, args.scan_layers == "on")
        task = build_task("lm")
        self.model = build_model(self.config.model, head="lm", vocab_size=self.vocab,
                                 num_classes=0)  # fmt: skip
        validate_adv_config(self.config.adv, self.model.streams, self.model.latent_streams)
        self.method = build_method(self.config.adv, task, self.config.train.num_steps)
        self.exp = Experiment(None, task, self.model, self.method, None)
        self.schedule = make_schedule(self.config.optim, self.config.train.num_steps)
        self.optimizer = make_optimizer(self.config.optim, self.schedule)
        self.mesh = make_mesh(1)
        self.key = jax.random.key(0)

    def flops_per_step(self, batch: int) -> float:
        return flops_per_step(self.name, self.seq_len, batch, self.method.theoretical_ratio())

    def _builder(self, batch: Any):
        """``build(params, frozen) -> TrainState`` for batches shaped like ``batch``."""
        size = batch["example_id"].shape[0]
        return state_builder(self.exp, self.optimizer, num_examples=size, batch=batch, seed=0)

    def compile(self, batch: int) -> tuple[Any, Any, Any, int | None]:
        """``(compiled step, state shapes, state shardings, planned bytes)``, nothing
        allocated: the step is lowered for shape structs, as ``benchmarks/memory.py`` does;
        planned = arguments + outputs - donated + temporaries (XLA's memory analysis)."""
        example = random_batch(batch, self.seq_len, self.vocab, 0)
        shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in example.items()}
        params = jax.eval_shape(self.model.init, self.key, shapes)
        state = jax.eval_shape(self._builder(shapes), params, None)
        shardings = state_shardings(state, self.mesh)
        step = make_train_step(self.model, self.exp.task, self.method, self.optimizer,
                               self.schedule, self.mesh, self.config.adv,
                               state_shardings=shardings)  # fmt: skip
        rng = jax.ShapeDtypeStruct(self.key.shape, self.key.dtype, sharding=replicated(self.mesh))
        where = batch_sharded(self.mesh)
        compiled = step.lower(
            _structs(state, shardings), {k: _structs(v, where) for k, v in shapes.items()}, rng
        ).compile()
        stats = compiled.memory_analysis()
        planned = None
        if stats is not None:
            planned = int(stats.argument_size_in_bytes + stats.output_size_in_bytes
                          - stats.alias_size_in_bytes + stats.temp_size_in_bytes)  # fmt: skip
        return compiled, state, shardings, planned

    def allocate(self, batch: int, shardings: Any) -> tuple[Any, list, list]:
        """A fresh state on the device (parameters, optimizer and method state made by one
        jitted program, laid out as ``shardings``), two global batches, four step keys."""
        batches = [to_global(random_batch(batch, self.seq_len, self.vocab, i), self.mesh)
                   for i in range(2)]  # fmt: skip
        build = self._builder(batches[0])

        def create(key, example):
            return build(self.model.init(key, example), None)

        state = jax.jit(create, out_shardings=shardings)(self.key, batches[0])
        keys = [jax.device_put(jax.random.fold_in(self.key, i), replicated(self.mesh))
                for i in range(4)]  # fmt: skip
        return state, batches, keys


def free_device_bytes() -> int | None:
    """Bytes the JAX allocator may still hand out on device 0; None where unknown (CPU)."""
    stats = jax.devices()[0].memory_stats()
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))


def fitted_batch(batch: int, planned: int, state_bytes: int, free: int) -> int:
    """The largest batch whose planned bytes (the state plus a part linear in the batch)
    fit :data:`MEMORY_HEADROOM` of ``free``; below ``batch``, which did not fit."""
    per_example = max(planned - state_bytes, 1) / batch
    return min(int((MEMORY_HEADROOM * free - state_bytes) // per_example), batch - 1)


def fit(setting: JaxSetting, batch: int, row: dict) -> tuple[Any, Any, int]:
    """Compiles ``setting`` at ``batch``, or at the smaller batch XLA's plan says fits;
    returns ``(compiled, shardings, batch)``; raises RowFailed if none fits."""
    for attempt in range(2):
        start = time.perf_counter()
        compiled, state, shardings, planned = setting.compile(batch)
        row.update(params=count_params(state.params), batch=batch,
                   compile_s=round(time.perf_counter() - start, 1),
                   planned_gib=None if planned is None else round(planned / GIB, 2))  # fmt: skip
        free = free_device_bytes()
        if planned is None or free is None or planned <= MEMORY_HEADROOM * free:
            return compiled, shardings, batch
        smaller = fitted_batch(batch, planned, _tree_bytes(state), free)
        if smaller < 1 or attempt == 1:
            raise RowFailed(f"out of memory: XLA plans {planned / GIB:.1f} GiB at batch "
                            f"{batch}, {free / GIB:.1f} GiB free")  # fmt: skip
        batch = smaller
    raise AssertionError("unreachable")


def measure_jax(model: str, method: str, remat: bool, args, budget_s: float) -> dict:
    """One of our rows: compile at a batch that fits, allocate, time; on an out-of-memory
    error once more at half the batch; a row that cannot run is returned skipped."""
    row = base_row("jax", model, method, remat, args.seq_len)
    row.update(scan_layers=args.scan_layers == "on", ascent_steps=ASCENT_STEPS.get(method),
               dtype="bfloat16 compute, float32 params")  # fmt: skip

    def attempt(batch: int) -> dict:
        setting = JaxSetting(model, method, remat, args)
        compiled, shardings, batch = fit(setting, batch, row)
        times, loss = time_jax(setting, compiled, shardings, batch, args, budget_s)
        row["final_loss"] = loss
        return finish(row, times, batch, setting.flops_per_step(batch))

    return with_oom_retry(row, args.batch or BATCHES.get((model, remat), 8), attempt)


def time_jax(setting: JaxSetting, compiled, shardings, batch: int, args, budget_s: float):
    """Seconds of the timed steps (``step_cost.time_calls``) and the last loss."""
    state, batches, keys = setting.allocate(batch, shardings)
    metrics: dict = {}

    def call(i: int):
        nonlocal state, metrics
        state, metrics = compiled(state, batches[i % 2], keys[i % 4])
        return state, metrics

    times = time_calls(call, args.warmup, args.steps, budget_s=budget_s)
    return times, float(metrics["loss"])


def jax_order(args, done: list[dict]) -> Iterator[tuple[str, bool, str]]:
    """(method, remat, reason to skip or "") of our rows, most wanted first: clean with
    each remat, then the adversarial methods with the remat whose clean step was faster,
    then with the other (skipped under ``--adv-remat best``). ``done``: the rows measured
    so far (read once the clean rows are)."""
    remats = REMATS[args.remat]
    if "none" in args.methods:
        for remat in remats:
            yield "none", remat, ""
    speed = {r["remat"]: r["tokens_per_s"] or 0.0 for r in done if r["method"] == "none"}
    for rank, remat in enumerate(sorted(remats, key=lambda r: -speed.get(r, 0.0))):
        skip = ""
        if rank > 0 and args.adv_remat == "best":
            skip = "--adv-remat best: adversarial rows with the faster remat only"
        for method in args.methods:
            if method != "none":
                yield method, remat, skip


# -- the peer ------------------------------------------------------------------------------


def peer_model(model: str, seq_len: int, device: str):
    """``transformers.LlamaForCausalLM`` of our preset's shape (the Hugging Face exporter's
    config mapping), float32 parameters on ``device``, in training mode."""
    import torch
    import transformers

    from llama_adv.models.hf_export import _llama_config

    ours = build_model(our_config(model, "none", False, True).model, head="lm",
                       vocab_size=vocab_of(model), num_classes=0)  # fmt: skip
    special = {"pad_token_id": PAD_ID, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID}
    config = transformers.LlamaConfig.from_dict(_llama_config(ours, special, seq_len))
    config.use_cache = False
    torch.manual_seed(0)
    with torch.device(device):
        return transformers.LlamaForCausalLM(config).train()


def peer_step(net, forward, device: str) -> Callable:
    """``step(ids) -> loss``: bf16 autocast forward, backward, clipping, AdamW."""
    import torch

    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01,
                                  fused=device == "cuda")  # fmt: skip

    def step(ids):
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def time_torch(model: str, mode: str, batch: int, args, row: dict, budget_s: float):
    """Seconds of the peer's timed steps and the last loss; the first step (which
    compiles under ``torch.compile``) is timed into ``row["compile_s"]``."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = peer_model(model, args.seq_len, device)
    row.update(params=sum(p.numel() for p in net.parameters()), batch=batch,
               attention=net.config._attn_implementation)  # fmt: skip
    forward = net if mode == "eager" else torch.compile(net, backend=row["compile_backend"])
    step = peer_step(net, forward, device)
    ids = [torch.as_tensor(random_batch(batch, args.seq_len, net.config.vocab_size, i)["inputs"],
                           dtype=torch.long, device=device) for i in range(2)]  # fmt: skip
    losses = []

    def call(i: int):
        losses.append(step(ids[i % 2]))
        return losses[-1]

    def sync(_) -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    sync(call(0))
    row["compile_s"] = round(time.perf_counter() - start, 1)
    times = time_calls(lambda i: call(i + 1), max(args.warmup - 1, 0), args.steps, sync=sync,
                       budget_s=budget_s)  # fmt: skip
    if device == "cuda":
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    return times, float(losses[-1].detach())


def measure_torch(model: str, mode: str, args, budget_s: float) -> dict:
    """One peer row, eager or ``torch.compile``; on out of memory once more at half the
    batch; a row that cannot run is returned skipped."""
    import torch

    cuda = torch.cuda.is_available()
    framework = "torch" if mode == "eager" else "torch.compile"
    row = base_row(framework, model, "none", False, args.seq_len)
    backend = args.compile_backend or ("inductor" if cuda else "aot_eager")
    row.update(dtype="bfloat16 autocast, float32 params",
               compile_backend=None if mode == "eager" else backend)  # fmt: skip

    def attempt(batch: int) -> dict:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times, loss = time_torch(model, mode, batch, args, row, budget_s)
        row["final_loss"] = loss
        return finish(row, times, batch, flops_per_step(model, args.seq_len, batch))

    return with_oom_retry(row, args.batch or BATCHES.get((model, False), 8), attempt)


# -- workers -------------------------------------------------------------------------------


def emit(path: Path, record: dict) -> None:
    """Appends one JSON line to a worker's rows file (kept if the worker is stopped)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def deadline_row(framework: str, method: str, remat: bool, args, left: float,
                 needed: float = 1.0) -> dict:  # fmt: skip
    row = base_row(framework, args.worker_model, method, remat, args.seq_len)
    row["reason"] = (f"deadline: {max(left, 0):.0f} s left of this worker's share, "
                     f"about {needed:.0f} s needed")  # fmt: skip
    return row


def timed(measure: Callable[[], dict]) -> dict:
    start = time.perf_counter()
    row = measure()
    row["wall_s"] = round(time.perf_counter() - start, 1)
    return row


def expected_seconds(rows: list[dict], remat: bool) -> float:
    """About what a row takes: what the clean row with its remat took (else any clean
    row; at least 1 s): compiling dominates, and adversarial steps compile longer still."""
    clean = [r.get("wall_s") or 0.0 for r in rows if r["method"] == "none"]
    same = [r.get("wall_s") or 0.0 for r in rows if (r["method"], r["remat"]) == ("none", remat)]
    return max([*(same or clean), 1.0])


def jax_worker(args, path: Path) -> None:
    """Our rows of ``args.worker_model``, in :func:`jax_order`, within the deadline: a row
    starts if the time left exceeds what the clean row of its remat took."""
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
    device = jax.devices()[0]
    emit(path, {"kind": "meta", "framework": "jax", "machine": machine(),
                "platform": device.platform, "device_kind": device.device_kind,
                "cpu_peak": matmul_peak() if device.platform == "cpu" else None})  # fmt: skip
    rows: list[dict] = []
    for method, remat, skip in jax_order(args, rows):
        left = args.deadline_at - time.time()
        needed = expected_seconds(rows, remat)
        if skip:
            row = base_row("jax", args.worker_model, method, remat, args.seq_len)
            row["reason"] = skip
        elif left < needed:
            row = deadline_row("jax", method, remat, args, left, needed)
        else:
            budget = min(args.row_seconds, max(left - 5.0, 1.0))
            row = timed(lambda: measure_jax(args.worker_model, method, remat, args, budget))
        rows.append(row)
        emit(path, {"kind": "row", **row})
        print(progress(row), flush=True)


def torch_worker(args, path: Path) -> None:
    """The peer rows of ``args.worker_model`` (eager, then compiled) within the deadline;
    without CUDA only under ``--tiny``."""
    import torch

    cuda = torch.cuda.is_available()
    emit(path, {"kind": "meta", "framework": "torch", "torch": torch.__version__,
                "platform": "cuda" if cuda else "cpu",
                "device_kind": torch.cuda.get_device_name() if cuda else "cpu"})  # fmt: skip
    for mode in PEER_MODES:
        framework = "torch" if mode == "eager" else "torch.compile"
        left = args.deadline_at - time.time()
        if not cuda and not args.tiny:
            row = base_row(framework, args.worker_model, "none", False, args.seq_len)
            row["reason"] = "torch has no CUDA: the peer runs on CPU only under --tiny"
        elif left < 1.0:
            row = deadline_row(framework, "none", False, args, left)
        else:
            budget = min(args.row_seconds, max(left - 5.0, 1.0))
            row = timed(lambda: measure_torch(args.worker_model, mode, args, budget))
        emit(path, {"kind": "row", **row})
        print(progress(row), flush=True)


def progress(row: dict) -> str:
    what = f"{row['framework']} {row['model']} {row['method']} remat={row['remat']}"
    if row["status"] != "ok":
        return f"{what}: skipped ({row['reason']})"
    return (f"{what} batch {row['batch']}: {1e3 * row['step_s']:.1f} ms/step, "
            f"{row['tokens_per_s']:.0f} tokens/s")  # fmt: skip


# -- the orchestrator ------------------------------------------------------------------------


class Worker:
    """One worker subprocess (a framework's rows of one model): its rows file and log."""

    def __init__(self, framework: str, model: str, argv: list[str], tmp: Path):
        self.framework, self.model, self.argv = framework, model, argv
        self.path = tmp / f"{framework}_{model}.jsonl"
        self.log = tmp / f"{framework}_{model}.log"
        self.ended = ""  # why its unfinished rows were not run

    def run(self, share_end: float, kill_at: float) -> None:
        """Runs the worker to its end, or kills it (its own session) at ``kill_at``."""
        env = dict(os.environ)
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")  # the device is its alone
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if "--tiny" in self.argv:  # a smoke run: compile time matters, not the code
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {TINY_XLA_FLAGS}".strip()
        command = [sys.executable, str(Path(__file__).resolve()), *self.argv,
                   "--worker", self.framework, "--worker-model", self.model,
                   "--worker-out", str(self.path), "--deadline-at", f"{share_end:.3f}"]  # fmt: skip
        with self.log.open("w") as log:
            proc = subprocess.Popen(command, stderr=log, env=env, start_new_session=True)
            try:
                proc.wait(timeout=max(kill_at - time.time(), 0.0))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):  # it may have just ended
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: it and children
                proc.wait()
                self.ended = "deadline: its worker was stopped at the end of its time share"
                return
        if proc.returncode:
            tail = self.log.read_text().strip().splitlines()[-1:] or [""]
            self.ended = f"worker failed (exit {proc.returncode}): {tail[0][:200]}"

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
                records.append(json.loads(line))
        return records


def planned_rows(args) -> list[dict]:
    """Every row the run wants, as skipped placeholders, in table order."""
    rows = []
    for model in args.models:
        for remat in REMATS[args.remat]:
            rows += [base_row("jax", model, m, remat, args.seq_len) for m in args.methods]
        if args.peer:
            rows += [base_row(f, model, "none", False, args.seq_len)
                     for f in ("torch", "torch.compile")]  # fmt: skip
    return rows


def orchestrate(args, argv: list[str], end: float, report: Callable[[list, list], str]) -> str:
    """Runs the workers one after the other, each within its share of the time left
    (:data:`WORKER_WEIGHT`), the last ending by ``end``, and ``report(metas, rows)`` after
    each; returns the last report."""
    rows = {key_of(r): r for r in planned_rows(args)}
    metas: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpu_bench_") as tmp:
        if not args.compile_cache:  # identical programs (the state's init) compile once
            argv = [*argv, "--compile-cache", str(Path(tmp) / "jax_cache")]
        workers = [Worker(f, m, argv, Path(tmp)) for m in args.models
                   for f in ("jax", "torch") if f == "jax" or args.peer]  # fmt: skip
        text = report(metas, list(rows.values()))  # the plan, every row pending
        for i, worker in enumerate(workers):
            weights = [WORKER_WEIGHT[w.framework] for w in workers[i:]]
            share_end = time.time() + (end - time.time()) * weights[0] / sum(weights)
            worker.run(share_end, min(share_end + KILL_GRACE_S, end))
            for record in worker.records():
                if record.pop("kind") == "meta":
                    metas.append(record)
                else:
                    rows[key_of(record)] = record
            for row in rows.values():
                mine = row["framework"].split(".")[0] == worker.framework
                unexplained = row["status"] != "ok" and not row["reason"]
                if mine and row["model"] == worker.model and unexplained:
                    row["reason"] = worker.ended or "not run"
            text = report(metas, list(rows.values()))
    return text


def resolve_peaks(rows: list[dict], metas: list[dict], given: float) -> dict[str, Any]:
    """Sets each row's ``mfu`` and ``peak_flops``; returns the header's peak fields. A
    row's peak: ``--peak``, else its device's bf16 peak (:data:`PEAKS`), else on CPU the
    measured float32 matmul rate, else unknown (mfu None)."""
    devices = {m["framework"]: m for m in metas}
    cpu_peak = next((m["cpu_peak"] for m in metas if m.get("cpu_peak")), None)
    peaks = {}
    for row in rows:
        meta = devices.get(row["framework"].split(".")[0], {})
        kind = meta.get("device_kind", "")
        if given:
            peak, source = given, "given (--peak)"
        elif peak_of(kind):
            peak, source = peak_of(kind), f"dense bf16 peak of {kind}"
        elif meta.get("platform") == "cpu" and cpu_peak:
            peak, source = cpu_peak, "measured float32 matmul rate (CPU, 1024^3)"
        else:
            peak, source = None, f"unknown for {kind or 'this device'}: MFU n/a"
        row["peak_flops"] = peak
        row["device_kind"] = kind or None
        if peak and row["status"] == "ok":
            row["mfu"] = row["flops_per_step"] / row["step_s"] / peak
        peaks[f"{row['framework'].split('.')[0]}: {kind}"] = (peak, source)
    return peaks


def fill_params(rows: list[dict]) -> None:
    """Skipped rows take their model's parameter count from a row that has it."""
    known = {r["model"]: r["params"] for r in rows if r["params"]}  # the peer's are ours
    for row in rows:
        row["params"] = row["params"] or known.get(row["model"])


# -- the report ----------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def targets(rows: list[dict], models: list[str]) -> list[str]:
    """The issue's three targets, checked per model from the measured rows."""
    ok = [r for r in rows if r["status"] == "ok"]
    lines = []
    for model in models:
        ours = [r for r in ok if r["model"] == model and r["framework"] == "jax"]
        clean = {r["remat"]: r for r in ours if r["method"] == "none"}
        best = max(clean.values(), key=lambda r: r["tokens_per_s"], default=None)
        if best is None:
            lines.append(f"- {model}: no clean row measured")
            continue
        mfu = best["mfu"]
        met = "n/a" if mfu is None else ("met" if mfu >= 0.45 else "not met")
        lines.append(f"- {model}, clean MFU >= 45%: {_pct(mfu)} (remat "
                     f"{'on' if best['remat'] else 'off'}): {met}")  # fmt: skip
        for r in ours:
            ref = clean.get(r["remat"])
            if r["method"] == "none" or ref is None or r["mfu"] is None or not ref["mfu"]:
                continue
            ratio = r["mfu"] / ref["mfu"]
            lines.append(f"- {model}, {r['method']} (remat {'on' if r['remat'] else 'off'}) "
                         f">= 90% of clean MFU: {_pct(ratio)}: "
                         f"{'met' if ratio >= 0.9 else 'not met'}")  # fmt: skip
        peers = [r for r in ok if r["model"] == model and r["framework"] != "jax"]
        if peers:
            peer = max(peers, key=lambda r: r["tokens_per_s"])
            ratio = best["tokens_per_s"] / peer["tokens_per_s"]
            lines.append(f"- {model}, >= 2x the peer's tokens/s ({peer['framework']}): "
                         f"{ratio:.2f}x: {'met' if ratio >= 2 else 'not met'}")  # fmt: skip
        else:
            lines.append(f"- {model}, >= 2x the peer's tokens/s: no peer row measured")
    return lines


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(header: dict, rows: list[dict]) -> str:
    lines = [
        "# GPU throughput and MFU: clean and adversarial training, and the PyTorch peer",
        "",
        f"- command: `{header['command']}`",
        f"- commit: `{header['commit']}`",
        f"- machine: {header['machine']}",
        f"- date: {header['date']}",
        f"- peaks: {header['peaks']}",
        f"- sequence length {header['seq_len']}, next-token LM on random tokens; median of up "
        f"to {header['steps']} timed steps after {header['warmup']} warm-up steps (or "
        f"{header['row_seconds']} s of them); wall {header['wall_s']:.0f} s of the "
        f"{header['deadline_s']:.0f} s deadline",
        "- ours (jax): bf16 compute, float32 parameters and AdamW state, blocks scanned "
        f"({header['scan_layers']}); peer: transformers.LlamaForCausalLM, bf16 autocast over "
        "float32 parameters, fused AdamW on CUDA",
        "- FLOPs per step = flops_per_token x tokens x the method's theoretical ratio (model "
        "FLOPs: remat's recomputation is not counted); MFU = FLOPs per step / step time / peak",
        *(["- tiny smoke run (--tiny): the targets are for the GPU run"] * header["tiny"]),
        "",
        "| model | params | framework | method | remat | batch | step ms | tokens/s "
        "| TFLOP/step | MFU | compile s | memory GiB | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        memory = r.get("planned_gib", r.get("peak_gib"))
        step_ms = None if r["step_s"] is None else 1e3 * r["step_s"]
        tflop = None if r["flops_per_step"] is None else r["flops_per_step"] / 1e12
        note = r["reason"] if r["status"] != "ok" else (r.get("compile_backend") or "")
        lines.append(
            f"| {r['model']} | {_cell(r['params'], ',')} | {r['framework']} | {r['method']} "
            f"| {'on' if r['remat'] else 'off'} | {_cell(r['batch'], 'd')} "
            f"| {_cell(step_ms, '.1f')} | {_cell(r['tokens_per_s'], ',.0f')} "
            f"| {_cell(tflop, '.3g')} | {_pct(r['mfu'])} | {_cell(r.get('compile_s'), '.1f')} "
            f"| {_cell(memory, '.1f')} | {note} |"
        )
    lines += ["", "memory: XLA's planned bytes of the compiled step (ours), "
              "torch.cuda.max_memory_allocated (peer).", "", "## Targets (issue 13, item 9)", "",
              *targets(rows, header["models"])]  # fmt: skip
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny decoder, seq 64 (CPU)")
    parser.add_argument("--models", default="", help=f"presets; default {','.join(MODELS)}")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--remat", choices=tuple(REMATS), default="both")
    parser.add_argument(
        "--adv-remat",
        choices=("both", "best"),
        default="",
        help="adversarial rows with each remat, or the faster's (tiny: best)",
    )
    parser.add_argument("--scan-layers", choices=("on", "off"), default="on")
    parser.add_argument("--seq-len", type=int, default=0, help=f"0 = {SEQ_LEN} (tiny 64)")
    parser.add_argument("--batch", type=int, default=0, help="every row's batch; 0 = BATCHES")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip the peer")
    backend = "torch.compile backend; '' = inductor on CUDA, aot_eager on CPU"
    parser.add_argument("--compile-backend", default="", help=backend)
    parser.add_argument("--steps", type=int, default=0, help="timed steps per row (10; tiny 2)")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up steps (2; tiny 1)")
    parser.add_argument("--row-seconds", type=float, default=10.0, help="timed seconds per row")
    parser.add_argument("--deadline", type=float, default=450.0, help="whole run, seconds")
    parser.add_argument("--peak", type=float, default=0.0, help="peak FLOP/s; 0 = by device")
    cache = "JAX compilation cache directory; '' = a temporary one for this run"
    parser.add_argument("--compile-cache", default="", help=cache)
    parser.add_argument("--out", default="results/gpu")
    for hidden in ("--worker", "--worker-model", "--worker-out"):
        parser.add_argument(hidden, default="", help=argparse.SUPPRESS)
    parser.add_argument("--deadline-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m for m in (args.models or ("tiny" if args.tiny else ",".join(MODELS)))
                   .split(",") if m]  # fmt: skip
    args.methods = [m for m in args.methods.split(",") if m]
    args.seq_len = args.seq_len or (TINY_SEQ_LEN if args.tiny else SEQ_LEN)
    args.steps = args.steps or (2 if args.tiny else 10)
    args.warmup = args.warmup or (1 if args.tiny else 2)
    args.adv_remat = args.adv_remat or ("best" if args.tiny else "both")
    return args


def check(args) -> None:
    """Unknown presets or methods fail before any worker starts."""
    for model in args.models:
        apply_preset(our_config(model, "none", False, True).model)
    for method in args.methods:
        REGISTRY.get(method, field="--methods")


def write_report(args, argv: list[str], start: float, metas: list[dict],
                 rows: list[dict]) -> str:  # fmt: skip
    """Writes ``gpu.json`` and ``gpu.md`` under ``--out`` (after every worker, so a run
    stopped from outside keeps the rows measured so far); returns the markdown."""
    rows = [dict(r) for r in rows]
    for row in rows:
        if row["status"] != "ok" and not row["reason"]:
            row["reason"] = "pending: its worker has not run yet"
    fill_params(rows)
    peaks = resolve_peaks(rows, metas, args.peak)
    jax_meta = next((m for m in metas if m["framework"] == "jax"), {})
    torch_meta = next((m for m in metas if m["framework"] == "torch"), {})
    machine_text = jax_meta.get("machine", "unknown (no JAX worker reported)")
    if torch_meta:
        machine_text += f"; torch {torch_meta['torch']} on {torch_meta['device_kind']}"
    peak_text = "; ".join(f"{k}: {source}" + (f" ({peak / 1e12:.1f} TFLOP/s)" if peak else "")
                          for k, (peak, source) in peaks.items())  # fmt: skip
    header = {
        "command": shlex.join(["python", "benchmarks/gpu.py", *argv]),
        "commit": git_commit(),
        "machine": machine_text,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "peaks": peak_text,
        "tiny": args.tiny, "models": args.models, "methods": args.methods,
        "seq_len": args.seq_len, "steps": args.steps, "warmup": args.warmup,
        "row_seconds": args.row_seconds, "deadline_s": args.deadline,
        "wall_s": time.time() - start, "scan_layers": args.scan_layers,
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(header, rows)
    (out / "gpu.json").write_text(json.dumps({**header, "rows": rows}, indent=2) + "\n")
    (out / "gpu.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    start = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker = {"jax": jax_worker, "torch": torch_worker}[args.worker]
        worker(args, Path(args.worker_out))
        return 0
    check(args)

    def report(metas: list[dict], rows: list[dict]) -> str:
        return write_report(args, argv, start, metas, rows)

    print(orchestrate(args, argv, start + args.deadline, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
