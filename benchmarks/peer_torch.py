"""Our train step against an eager PyTorch peer and a plain Flax floor, on CPU, in one run.

Three implementations of one decoder-only sequence classifier (LLaMA blocks; by default
d_model 256, 4 blocks of 4 heads, d_ff 688, vocabulary 8192, 2 classes, batch 32 x 64
tokens of the synthetic sentiment task), each timed for a median step after warm-up:

- ``llama_adv``: our jitted train step as ``benchmarks/step_cost.py`` builds it
  (``build_experiment``, ``create_state``, ``make_train_step``, ``TrainStream``), for
  ``none``, ``fgm``, ``freelb`` and ``pgd`` (``K = --k``).
- ``torch``: transformers' ``LlamaForSequenceClassification`` holding the same initial
  weights (``hf_checkpoint``), eager PyTorch with ``torch.set_num_threads`` = the core
  count, AdamW and gradient clipping as ours, and the adversarial loops as the public
  PyTorch code writes them: FGM adds ``eps * g / ||g||`` to the embedding *weight* after
  the clean backward, runs a second backward and restores it (the widely copied ``FGM``
  class); FreeLB is zhuchen03/FreeLB's loop (``K`` ascent steps on a ``delta`` added to
  ``inputs_embeds``, each backward accumulating ``loss / K``, the embeddings recomputed per
  step); PGD takes ``K`` projected L2 steps on ``delta`` (``torch.autograd.grad``, no
  parameter gradients) from a projected uniform start, then one backward of
  ``L(e + delta_K)``. Radius, step size, init magnitude and ``K`` are our method's
  resolved options (METHODS.md), so both sides do the same work.
- ``flax_plain``: a minimal jitted Flax model of the same shape (forward, loss, grad,
  optax AdamW) for clean training only: the floor for our framework's overhead.

Each row has the median step time, examples/s and tokens/s, model FLOP/s (the
classification-head FLOP count of :func:`llama_adv.models.flops_per_token` times the
implementation's own passes), the parameter count and ``ours / this``: our step time for
the same method (``none`` for ``flax_plain``) over this row's (> 1: ours is slower).

    python benchmarks/peer_torch.py --out results/peer_torch

Writes ``peer_torch.json`` and ``peer_torch.md`` under ``--out``; ``--tiny`` shrinks the
model and batch for tests.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import importlib.util
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import torch
import transformers
from transformers import LlamaConfig, LlamaForSequenceClassification

from llama_adv.adversarial import METHODS, ascent
from llama_adv.config import load_config
from llama_adv.data.pipeline import TrainStream
from llama_adv.models import PAD_ID, count_params, flops_per_token
from llama_adv.models.hf_export import hf_checkpoint
from llama_adv.train.setup import Experiment, build_experiment

METHOD_NAMES = ("none", "fgm", "freelb", "pgd")
FULL = dict(d_model=256, layers=4, heads=4, d_ff=688, vocab=8192, seq_len=64, batch_size=32)
TINY = dict(d_model=32, layers=1, heads=2, d_ff=64, vocab=128, seq_len=16, batch_size=8)
KEYS = (
    "framework", "method", "num_params", "step_s", "step_s_iqr", "examples_per_s",
    "tokens_per_s", "cost", "model_flops_per_step", "model_flops_per_s", "ours_over_this",
)  # fmt: skip
Row = dict[str, Any]
TorchBatch = dict[str, torch.Tensor]
Opts = dict[str, float]
Tensor = torch.Tensor


def _step_cost() -> ModuleType:
    """``benchmarks/step_cost.py`` (beside this file; ``benchmarks`` is no package)."""
    path = Path(__file__).resolve().with_name("step_cost.py")
    spec = importlib.util.spec_from_file_location("step_cost", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("step_cost", module)
    spec.loader.exec_module(module)
    return module


STEP_COST = _step_cost()


# --------------------------------------------------------------------------- shared setup


def overrides(args: argparse.Namespace, method: str) -> list[str]:
    """Config overrides of the benchmarked shape (``method``: its ``K``)."""
    out = [
        f"model.d_model={args.d_model}", f"model.num_layers={args.layers}",
        f"model.num_heads={args.heads}", f"model.d_ff={args.d_ff}",
        f"model.vocab_size={args.vocab}", "model.dropout_rate=0.0",
        f"data.num_train={4 * args.batch_size}", f"data.num_eval={args.batch_size}",
    ]  # fmt: skip
    if method in ("freelb", "pgd"):
        out.append(f"adv.steps={args.k}")
    return out + list(args.override)


def our_config(args: argparse.Namespace, method: str) -> mlc.ConfigDict:
    """The config :func:`step_cost.measure` trains for ``method``."""
    config = load_config(f"{args.config}:method={method}", overrides(args, method))
    config.data.max_length = args.seq_len
    config.train.batch_size = args.batch_size
    return config


def per_step_flops(config: mlc.ConfigDict, exp: Experiment, cost: tuple[int, int, int]) -> float:
    """Model FLOPs of one step with ``cost`` = (forwards, input-only backwards, parameter
    backwards), weighed 1, 1, 2 as :meth:`Method.theoretical_ratio` does."""
    per_token = flops_per_token(
        config.model,
        config.data.max_length,
        exp.dataset.vocab_size,
        head=exp.task.head,
        num_classes=config.task.num_classes or exp.dataset.num_classes,
    )
    forward, input_backward, param_backward = cost
    ratio = (forward + input_backward + 2 * param_backward) / 3
    return per_token * config.data.max_length * config.train.batch_size * ratio


def timed(run: Callable[[int], None], steps: int, warmup: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``run(i)`` after ``warmup`` untimed ones."""
    for i in range(warmup):
        run(i)
    times = []
    for i in range(warmup, warmup + steps):
        start = time.perf_counter()
        run(i)
        times.append(time.perf_counter() - start)
    return times


def summary(framework: str, method: str, times: list[float], args: argparse.Namespace) -> Row:
    median = statistics.median(times)
    return {
        "framework": framework,
        "method": method,
        "step_s": median,
        "step_s_iqr": [float(np.percentile(times, 25)), float(np.percentile(times, 75))],
        "examples_per_s": args.batch_size / median,
        "tokens_per_s": args.batch_size * args.seq_len / median,
    }


# --------------------------------------------------------------------------- llama_adv


def measure_ours(args: argparse.Namespace, method: str) -> Row:
    """:func:`step_cost.measure` of ``method`` at the benchmarked shape."""
    spec = argparse.Namespace(
        config=args.config, override=overrides(args, method), seq_len=args.seq_len,
        batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
    )  # fmt: skip
    m = STEP_COST.measure(method, spec)
    cost = tuple(m["cost"])
    return {
        "framework": "llama_adv", "method": method, "num_params": m["num_params"],
        "step_s": m["step_s"], "step_s_iqr": m["step_s_iqr"],
        "examples_per_s": m["examples_per_s"], "tokens_per_s": m["tokens_per_s"],
        "cost": list(cost), "model_flops_per_step": m["flops_per_step"],
        "compile_s": m["compile_s"], "final_loss": m["final_loss"],
    }  # fmt: skip


def attack_options(exp: Experiment, config: mlc.ConfigDict) -> dict[str, float]:
    """Our method's resolved radius and, for iterative methods, ``K``, step size and init
    magnitude (absolute units); empty for clean training."""
    if config.adv.method == "none":
        return {}
    opt, eps = exp.method.opt, float(config.adv.epsilon)
    if config.adv.radius_unit != "absolute" or opt.norm != "l2":
        raise SystemExit("peer_torch compares L2 attacks with absolute radii only.")
    out = {"epsilon": eps}
    if exp.method.iterative:
        magnitude = opt.init_magnitude
        out["steps"] = int(opt.steps)
        out["step_size"] = float(f"{float(ascent.step_size(opt, eps)):.6g}")  # float32 noise
        out["init_magnitude"] = eps if magnitude is None or magnitude < 0 else float(magnitude)
    return out


# --------------------------------------------------------------------------- torch


def torch_peer(exp: Experiment, params: Any, attention: str) -> LlamaForSequenceClassification:
    """``LlamaForSequenceClassification`` with ``params`` (our model's, via hf_checkpoint)."""
    config, tensors = hf_checkpoint(exp.model, params)
    config = LlamaConfig.from_dict(config, attn_implementation=attention)
    model = LlamaForSequenceClassification(config)
    state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    return model.train()


def torch_batch(exp: Experiment, batch: dict[str, np.ndarray]) -> TorchBatch:
    """Token ids, attention mask, the readout position, labels and our perturbable mask."""
    ids = torch.from_numpy(np.asarray(batch["inputs"], np.int64))
    real = ids != PAD_ID
    mask = np.asarray(jax.jit(exp.model.perturbable_mask)(batch)["inputs"], np.float32)
    return {
        "ids": ids,
        "attention": real.long(),
        "last": (real.sum(1) - 1).clamp(min=0),
        "labels": torch.from_numpy(np.asarray(batch["label"], np.int64)),
        "perturb": torch.from_numpy(mask)[:, :, None],
    }


def torch_loss(
    model: LlamaForSequenceClassification, embeds: Tensor, b: TorchBatch
) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and ``[B, C]`` logits of ``LlamaForSequenceClassification``'s
    computation on ``inputs_embeds``: the body, the hidden state of the last real token,
    ``score``. (Its own ``forward`` cannot find the last real token from embeddings.)"""
    hidden = model.model(inputs_embeds=embeds, attention_mask=b["attention"]).last_hidden_state
    pooled = hidden[torch.arange(hidden.shape[0]), b["last"]]
    logits = model.score(pooled)
    return torch.nn.functional.cross_entropy(logits, b["labels"]), logits


def _per_example_norm(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).norm(dim=1).reshape(-1, 1, 1).clamp(min=1e-8)


def _project(delta: Tensor, eps: float) -> Tensor:
    """Rescales each example's ``delta`` onto the L2 ball of radius ``eps`` if outside."""
    return delta * (eps / _per_example_norm(delta)).clamp(max=1.0)


def _uniform_start(b: TorchBatch, shape: torch.Size, magnitude: float) -> Tensor:
    """FreeLB's L2 init: ``U(-1, 1) * mask * mag / sqrt(len * D)``."""
    mask = b["perturb"]
    dims = (mask.sum((1, 2)) * shape[-1]).clamp(min=1.0)
    delta = torch.empty(shape).uniform_(-1, 1) * mask
    return delta * (magnitude / dims.sqrt()).reshape(-1, 1, 1)


def torch_clean(model: LlamaForSequenceClassification, b: TorchBatch, opts: Opts) -> float:
    loss, _ = torch_loss(model, model.model.embed_tokens(b["ids"]), b)
    loss.backward()
    return float(loss.detach())


def torch_fgm(model: LlamaForSequenceClassification, b: TorchBatch, opts: Opts) -> float:
    """The public ``FGM`` class: perturb the embedding weight along its gradient."""
    embed = model.model.embed_tokens
    loss, _ = torch_loss(model, embed(b["ids"]), b)
    loss.backward()
    weight = embed.weight
    backup = weight.data.clone()
    norm = torch.norm(weight.grad)
    if norm != 0 and not torch.isnan(norm):
        weight.data.add_(opts["epsilon"] * weight.grad / norm)
    adv, _ = torch_loss(model, embed(b["ids"]), b)
    adv.backward()
    weight.data = backup
    return float(loss.detach())


def torch_freelb(model: LlamaForSequenceClassification, b: TorchBatch, opts: Opts) -> float:
    """zhuchen03/FreeLB's loop (L2, max_norm = our radius)."""
    embed, k = model.model.embed_tokens, opts["steps"]
    embeds = embed(b["ids"])
    delta = _uniform_start(b, embeds.shape, opts["init_magnitude"]).detach()
    total = 0.0
    for step in range(k):
        delta.requires_grad_()
        loss, _ = torch_loss(model, embeds + delta, b)
        loss = loss / k
        total += float(loss.detach())
        loss.backward()
        if step == k - 1:
            break
        grad = delta.grad.detach() * b["perturb"]
        delta = (delta + opts["step_size"] * grad / _per_example_norm(grad)).detach()
        delta = _project(delta, opts["epsilon"]).detach()
        embeds = embed(b["ids"])
    return total


def torch_pgd(model: LlamaForSequenceClassification, b: TorchBatch, opts: Opts) -> float:
    """``K`` projected L2 ascent steps on ``delta`` (no parameter gradients), then one
    backward of the adversarial loss."""
    embed = model.model.embed_tokens
    embeds = embed(b["ids"])
    delta = _uniform_start(b, embeds.shape, opts["init_magnitude"])
    delta = _project(delta, opts["epsilon"]).detach()
    for _ in range(opts["steps"]):
        delta.requires_grad_()
        loss, _ = torch_loss(model, embeds.detach() + delta, b)
        (grad,) = torch.autograd.grad(loss, delta)
        grad = grad * b["perturb"]
        delta = delta.detach() + opts["step_size"] * grad / _per_example_norm(grad)
        delta = _project(delta, opts["epsilon"]).detach()
    loss, _ = torch_loss(model, embeds + delta, b)
    loss.backward()
    return float(loss.detach())


TORCH_STEPS = {"none": torch_clean, "fgm": torch_fgm, "freelb": torch_freelb, "pgd": torch_pgd}


def torch_cost(method: str, opts: dict[str, float]) -> tuple[int, int, int]:
    """(forwards, input-only backwards, parameter backwards) of the torch loop."""
    k = int(opts.get("steps", 0))
    return {"none": (1, 0, 1), "fgm": (2, 0, 2), "freelb": (k, 0, k), "pgd": (k + 1, k, 1)}[method]


def measure_torch(args: argparse.Namespace, method: str, setup: dict[str, Any]) -> Row:
    config = our_config(args, method)
    exp = build_experiment(config)
    opts = attack_options(exp, config)
    model = copy.deepcopy(setup["torch_model"]).train()
    o = config.optim
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps,
        weight_decay=o.weight_decay,
    )  # fmt: skip
    batches = setup["torch_batches"]
    step = TORCH_STEPS[method]

    def run(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        step(model, batches[i % len(batches)], opts)
        if o.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip_norm)
        optimizer.step()

    torch.manual_seed(0)
    row = summary("torch", method, timed(run, args.steps, args.warmup), args)
    cost = torch_cost(method, opts)
    row.update(
        num_params=sum(p.numel() for p in model.parameters()),
        cost=list(cost),
        model_flops_per_step=per_step_flops(config, exp, cost),
        attack=opts,
    )
    return row


def peer_logit_gap(setup: dict[str, Any], args: argparse.Namespace) -> float:
    """Max |logit difference| of our model and the torch peer at the shared weights."""
    exp, params, batch = setup["exp"], setup["params"], setup["batches"][0]
    model = exp.model
    ours = jax.jit(lambda p, b: model.apply_embedded(p, model.embed(p, b), b)["logits"])(
        params, batch
    )
    peer, b = setup["torch_model"].eval(), setup["torch_batches"][0]
    with torch.no_grad():
        _, theirs = torch_loss(peer, peer.model.embed_tokens(b["ids"]), b)
    return float(np.max(np.abs(np.asarray(ours) - theirs.numpy())))


# --------------------------------------------------------------------------- plain Flax


def _rotate(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding of ``x`` ``[B, T, H, hd]`` (halves rotated, as LLaMA/HF)."""
    half = x.shape[-1] // 2
    freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions[:, :, None, None] * freq
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class PlainBlock(nn.Module):
    heads: int
    d_ff: int
    eps: float

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, bias: jax.Array) -> jax.Array:
        d = x.shape[-1]
        hd = d // self.heads
        h = nn.RMSNorm(self.eps)(x)
        dense = functools.partial(nn.DenseGeneral, (self.heads, hd), use_bias=False)
        q, k, v = dense()(h), dense()(h), dense()(h)
        q, k = _rotate(q, positions, 10000.0), _rotate(k, positions, 10000.0)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd) + bias
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        x = x + nn.DenseGeneral(d, axis=(-2, -1), use_bias=False)(out)
        h = nn.RMSNorm(self.eps)(x)
        gate = nn.Dense(self.d_ff, use_bias=False)(h)
        up = nn.Dense(self.d_ff, use_bias=False)(h)
        return x + nn.Dense(d, use_bias=False)(nn.silu(gate) * up)


class PlainClassifier(nn.Module):
    """A LLaMA-block classifier on the last real token, nothing else."""

    vocab: int
    d_model: int
    layers: int
    heads: int
    d_ff: int
    classes: int
    eps: float = 1e-6

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        real = ids != PAD_ID
        t = ids.shape[1]
        causal = jnp.tril(jnp.ones((t, t), bool))[None, None]
        bias = jnp.where(causal & real[:, None, None, :], 0.0, -1e9)
        positions = jnp.arange(t, dtype=jnp.float32)[None].repeat(ids.shape[0], 0)
        x = nn.Embed(self.vocab, self.d_model, embedding_init=nn.initializers.normal(0.02))(ids)
        for _ in range(self.layers):
            x = PlainBlock(self.heads, self.d_ff, self.eps)(x, positions, bias)
        x = nn.RMSNorm(self.eps)(x)
        last = jnp.maximum(real.sum(1) - 1, 0)
        return nn.Dense(self.classes)(x[jnp.arange(x.shape[0]), last])


def measure_plain(args: argparse.Namespace, setup: dict[str, Any]) -> Row:
    config, exp = setup["config"], setup["exp"]
    model = PlainClassifier(
        args.vocab, args.d_model, args.layers, args.heads, args.d_ff,
        config.task.num_classes or exp.dataset.num_classes,
    )  # fmt: skip
    batches = [(jnp.asarray(b["inputs"]), jnp.asarray(b["label"])) for b in setup["batches"]]
    params = jax.jit(model.init)(jax.random.key(0), batches[0][0])["params"]
    o = config.optim
    tx = optax.chain(
        optax.clip_by_global_norm(o.grad_clip_norm),
        optax.adamw(o.learning_rate, o.b1, o.b2, o.eps, weight_decay=o.weight_decay),
    )

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, ids, labels):
        def loss_fn(p):
            logits = model.apply({"params": p}, ids)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = {"params": params, "opt": tx.init(params)}
    start = time.perf_counter()
    compiled = train_step.lower(state["params"], state["opt"], *batches[0]).compile()
    compile_s = time.perf_counter() - start

    def run(i: int) -> None:
        out = compiled(state["params"], state["opt"], *batches[i % len(batches)])
        state["params"], state["opt"], _ = jax.block_until_ready(out)

    row = summary("flax_plain", "none", timed(run, args.steps, args.warmup), args)
    row.update(
        num_params=count_params(state["params"]),
        cost=[1, 0, 1],
        model_flops_per_step=per_step_flops(config, exp, (1, 0, 1)),
        compile_s=compile_s,
    )
    return row


# --------------------------------------------------------------------------- report


def shared_setup(args: argparse.Namespace) -> dict[str, Any]:
    """The clean config's experiment, four training batches, initial parameters and the
    torch peer holding them (copied for each method), with the batches in torch form."""
    config = our_config(args, "none")
    exp = build_experiment(config)
    stream = TrainStream(exp.dataset.split("train"), args.batch_size, 0)
    batches = [stream.batch(i) for i in range(4)]
    params = jax.jit(exp.model.init)(jax.random.key(config.train.seed), batches[0])
    return {
        "config": config, "exp": exp, "batches": batches, "params": params,
        "torch_model": torch_peer(exp, jax.device_get(params), args.torch_attention),
        "torch_batches": [torch_batch(exp, b) for b in batches],
    }  # fmt: skip


def finish(rows: list[Row]) -> None:
    """Adds model FLOP/s and ``ours_over_this`` to every row."""
    ours = {r["method"]: r["step_s"] for r in rows if r["framework"] == "llama_adv"}
    for r in rows:
        r["model_flops_per_s"] = r["model_flops_per_step"] / r["step_s"]
        mine = ours.get(r["method"])
        r["ours_over_this"] = mine / r["step_s"] if mine else None


NOTES = (
    "ours / this = our step time for the same method (flax_plain: ours `none`) over the "
    "row's; > 1 means ours is slower.",
    "cost = (forwards, input-only backwards, parameter backwards) of the row's own loop; "
    "model FLOP/s = flops_per_token (classification head) x tokens x "
    "(f + i + 2p) / 3 of that cost.",
    "Parameters: the torch peer lacks our classifier's bias (num_classes scalars; "
    "LlamaForSequenceClassification.score has none); it holds our model's initial weights.",
    "Ours runs one clean forward more than torch in freelb (the flip-rate metric) and pgd "
    "(the clean reference); it is in our cost column.",
    "torch FGM normalises the gradient of the whole embedding table (the public FGM "
    "class), ours per example over the input embeddings: the same passes.",
    "Learning rate: ours follows the config's warm-up schedule, torch and flax_plain a "
    "constant rate (the same update arithmetic).",
)


def markdown(header: dict[str, Any], rows: list[Row]) -> str:
    lines = [
        "# Step time: llama_adv against a PyTorch peer and a plain Flax floor (CPU)",
        "",
        f"- command: `{header['command']}`",
        f"- commit: `{header['commit']}`",
        f"- machine: {header['machine']}",
        f"- date: {header['date']}",
        f"- model: {header['model']}; batch {header['batch_size']} x {header['seq_len']} "
        f"tokens; median of {header['steps']} steps after {header['warmup']} warm-up steps",
        f"- attacks: {header['attacks']}",
        f"- peer check: max |logit difference| at the shared initial weights "
        f"{header['peer_logit_gap']:.2e}",
        *[f"- {note}" for note in NOTES],
        "",
        "| framework | method | parameters | cost | step ms | IQR ms | examples/s | tokens/s "
        "| GFLOP/s | ours / this |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = (1e3 * x for x in r["step_s_iqr"])
        ratio = "-" if r["ours_over_this"] is None else f"{r['ours_over_this']:.2f}"
        lines.append(
            f"| {r['framework']} | {r['method']} | {r['num_params']:,} "
            f"| {'/'.join(map(str, r['cost']))} | {1e3 * r['step_s']:.1f} "
            f"| {low:.1f}-{high:.1f} | {r['examples_per_s']:.0f} | {r['tokens_per_s']:.0f} "
            f"| {r['model_flops_per_s'] / 1e9:.2f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quickstart.py", help="data, optim, adv")
    parser.add_argument("--override", action="append", default=[], help="key=value")
    parser.add_argument("--methods", default=",".join(METHOD_NAMES))
    for name in FULL:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--k", type=int, default=3, help="freelb and pgd ascent steps")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=None, help="default 3 (tiny: 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = cores")
    parser.add_argument("--torch-attention", default="sdpa", help="sdpa | eager")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and batch (tests)")
    parser.add_argument("--out", default="results/peer_torch")
    args = parser.parse_args(argv)
    for name, value in (TINY if args.tiny else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        METHODS.get(m, field="--methods")
        if m not in TORCH_STEPS:
            raise SystemExit(f"--methods: {m!r} has no torch loop; valid: {METHOD_NAMES}")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    setup = shared_setup(args)
    rows: list[Row] = []
    for method in methods:
        rows.append(measure_ours(args, method))
        rows.append(measure_torch(args, method, setup))
        print(" | ".join(f"{r['framework']} {1e3 * r['step_s']:.1f} ms" for r in rows[-2:]),
              f"({method})", flush=True)  # fmt: skip
    rows.append(measure_plain(args, setup))
    finish(rows)
    attacks = {r["method"]: r["attack"] for r in rows if r["framework"] == "torch"}
    header = {
        "command": shlex.join(
            ["python", "benchmarks/peer_torch.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "commit": STEP_COST.git_commit(),
        "machine": f"{STEP_COST.machine()}; torch {torch.__version__} "
        f"({threads} threads, {args.torch_attention} attention), "
        f"transformers {transformers.__version__}",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": f"decoder classifier d_model={args.d_model} layers={args.layers} "
        f"heads={args.heads} d_ff={args.d_ff} vocab={args.vocab}",
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "warmup": args.warmup,
        "attacks": ", ".join(f"{m} {json.dumps(a)}" for m, a in attacks.items()),
        "peer_logit_gap": peer_logit_gap(setup, args),
        "notes": list(NOTES),
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer_torch.json").write_text(json.dumps({**header, "rows": rows}, indent=2) + "\n")
    (out / "peer_torch.md").write_text(markdown(header, rows))
    print(markdown(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
