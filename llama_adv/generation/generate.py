"""``run_generate(workdir, prompts)``: a trained run's continuations of text prompts.

Greedy by default, or sampled (temperature, top-k, top-p); batched; the cached decoding of
:mod:`llama_adv.models.decoding`, one jitted call per batch (no host round trip per token).
The decoder-only model continues the prompt; the encoder-decoder encodes it and decodes
from BOS. Every row stops at EOS (the rest is padding).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections as mlc
import numpy as np

from llama_adv.errors import UserError
from llama_adv.generation.prompts import format_prompt
from llama_adv.models.decoding import generate_decoder, generate_from_encoded
from llama_adv.special_tokens import PAD_ID
from llama_adv.tasks import build_task

#: prompt widths are rounded up to a multiple of this, so few shapes are compiled
WIDTH_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How tokens are picked: argmax at ``temperature`` 0 (the default), else a sample of
    the top ``top_k`` (0: all) tokens within the nucleus of mass ``top_p`` (1: all);
    reproducible for one ``seed`` and ``batch_size``."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8

    def check(self) -> None:
        """Raises UserError on an option outside its range."""
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}.")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {self.temperature}.")
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 0 (0: no top-k filter), got {self.top_k}.")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1] (1: no nucleus filter), got {self.top_p}.")


def check_generative(config: mlc.ConfigDict, workdir: str | Path) -> None:
    """Raises UserError unless the run's task has an LM head (lm, seq2seq, chat)."""
    task = build_task(config.task.name)
    if task.head != "lm":
        raise UserError(
            f"generate needs a run with an LM head (task lm, seq2seq or chat); {workdir} is a "
            f"{config.task.name} run (task.name={config.task.name!r}): evaluate it with "
            "`llama-adv evaluate` or attack it with `llama-adv robustness`."
        )


def encode_prompts(config: mlc.ConfigDict, tokenizer, texts: list[str]) -> np.ndarray:
    """``[N, P]`` int32: each text's :func:`format_prompt` ids, right-padded with PAD to the
    longest (rounded up to a multiple of ``WIDTH_MULTIPLE``)."""
    ids = [format_prompt(config, tokenizer, t) for t in texts]
    width = -(-max(len(i) for i in ids) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    out = np.full((len(ids), width), PAD_ID, np.int32)
    for row, seq in enumerate(ids):
        out[row, : len(seq)] = seq
    return out


def make_generate_fn(
    model, encoder_decoder: bool, sampling: Sampling, tokenizer, eos_id: int | None = None
) -> Callable:
    """``fn(params, prompts [B, P], rng) -> tokens [B, max_new_tokens]``, jitted: greedy or
    sampled (``sampling``) cached decoding; rows end with ``eos_id`` (default the
    tokenizer's EOS), then PAD."""
    eos_id = tokenizer.eos_id if eos_id is None else eos_id
    options = dict(
        temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
        eos_id=eos_id, with_logits=False,
    )  # fmt: skip
    n = sampling.max_new_tokens

    def fn(params, prompts, rng):
        if encoder_decoder:
            encoded, mask = model.encode(params, prompts)
            return generate_from_encoded(
                model, params, encoded, mask, n, rng=rng, start_id=tokenizer.bos_id, **options
            )[0]
        return generate_decoder(model, params, prompts, n, rng=rng, **options)[0]

    return jax.jit(fn)


def until_eos(tokens: np.ndarray, eos_id: int) -> tuple[list[int], bool]:
    """The tokens ``[N]`` before the first EOS, and whether there was one."""
    stops = np.flatnonzero(tokens == eos_id)
    if stops.size:
        return [int(t) for t in tokens[: stops[0]]], True
    return [int(t) for t in tokens if t != PAD_ID], False


def generate_texts(
    model, params, config: mlc.ConfigDict, tokenizer, texts: list[str], sampling: Sampling
) -> list[dict]:
    """Generations of ``texts``, batched ``sampling.batch_size`` at a time (the last batch
    padded with copies of its first prompt, so every batch has one shape).

    Returns one row per text: ``prompt``, ``generation`` (decoded text), ``tokens`` (new
    ids before EOS) and ``stopped`` (an EOS was generated within ``max_new_tokens``).
    """
    sampling.check()
    prompts = encode_prompts(config, tokenizer, texts)
    eos_id = tokenizer.eos_id
    if config.task.name == "chat":  # a reply ends at the chat template's end of turn
        from llama_adv.data.chat import stop_id

        eos_id = stop_id(tokenizer)
    encoder_decoder = config.model.name == "encoder_decoder"
    generate = make_generate_fn(model, encoder_decoder, sampling, tokenizer, eos_id)
    root = jax.random.key(sampling.seed)
    size, rows = sampling.batch_size, []
    for i, start in enumerate(range(0, len(texts), size)):
        batch = prompts[start : start + size]
        filled = np.concatenate([batch, np.repeat(batch[:1], size - len(batch), axis=0)])
        tokens = np.asarray(jax.device_get(generate(params, filled, jax.random.fold_in(root, i))))
        for text, row in zip(texts[start : start + size], tokens, strict=False):
            ids, stopped = until_eos(row, eos_id)
            rows.append({"prompt": text, "generation": tokenizer.decode(ids), "tokens": ids,
                         "stopped": stopped})  # fmt: skip
    return rows


def run_generate(
    workdir: str | Path,
    texts: list[str],
    sampling: Sampling = Sampling(),
    *,
    step: int | None = None,
    overrides: tuple[str, ...] = (),
    out: str | Path | None = None,
) -> list[dict]:
    """Generations of ``texts`` by the run in ``workdir`` at ``step`` (default: the best
    checkpoint, else the latest), with the run's tokenizer; written to ``out`` (JSONL, one
    row per prompt: see :func:`generate_texts`) when given.

    Raises:
      UserError: not a run, no checkpoint (at ``step``), a classification run, bad options.
    """
    from llama_adv.robustness.loading import load_run, run_config

    sampling.check()
    config = run_config(workdir, overrides)
    check_generative(config, workdir)  # before the (slow) checkpoint load
    run = load_run(workdir, config=config, step=step)
    tokenizer = run.exp.dataset.tokenizer
    rows = generate_texts(run.exp.model, run.params, config, tokenizer, texts, sampling)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("".join(json.dumps({**r, "step": run.step}) + "\n" for r in rows))
    return rows


__all__ = ["Sampling", "generate_texts", "run_generate"]
