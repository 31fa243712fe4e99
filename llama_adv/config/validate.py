"""Type and range checks of a resolved config, run before anything is written.

Registry names (models, datasets, methods) are checked where they are looked up; this
module checks what no lookup would catch: sizes that must be positive, rates in range,
names of small fixed sets, and fields that a chosen dataset or task would silently ignore.
Each failure is one :class:`UserError` naming the field, its value and what is valid.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections as mlc

from llama_adv.adversarial.token_scope import needs_prompts
from llama_adv.data.synthetic_chat import MIN_LENGTH as CHAT_MIN_LENGTH
from llama_adv.errors import UserError

SYNTHETIC_MIN_LENGTH = {
    "synthetic_sentiment": 2,
    "synthetic_lm": 2,
    "synthetic_reverse": 4,
    "synthetic_chat": CHAT_MIN_LENGTH,  # its longest example, untruncated
}
TASKS = ("classification", "lm", "seq2seq", "chat")
EVAL_ATTACKS = ("pgd", "fgm", "none")
NORMS = ("l2", "linf")
SCOPES = ("example", "token")
RADIUS_UNITS = ("absolute", "embedding_rms")
POOLINGS = ("auto", "last", "mean", "label_words")


def _fail(field: str, value: Any, requirement: str) -> UserError:
    return UserError(f"{field}={value!r} is invalid: it {requirement}.")


def _number(field: str, value: Any, integer: bool) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _fail(field, value, f"must be {'an integer' if integer else 'a number'}")


def _at_least(section: mlc.ConfigDict, prefix: str, minimum: float, *fields: str) -> None:
    for name in fields:
        value = section[name]
        _number(f"{prefix}.{name}", value, isinstance(minimum, int))
        if value < minimum:
            raise _fail(f"{prefix}.{name}", value, f"must be >= {minimum}")


def _between(
    section: mlc.ConfigDict,
    prefix: str,
    low: float,
    high: float,
    *fields: str,
    high_open: bool = False,
) -> None:
    for name in fields:
        value = section[name]
        _number(f"{prefix}.{name}", value, integer=False)
        if value < low or value > high or (high_open and value == high):
            bracket = ")" if high_open else "]"
            raise _fail(f"{prefix}.{name}", value, f"must lie in [{low}, {high}{bracket}")


def _one_of(section: mlc.ConfigDict, prefix: str, name: str, valid: Sequence[str]) -> None:
    if section[name] not in valid:
        raise _fail(f"{prefix}.{name}", section[name], f"must be one of {', '.join(valid)}")


def _model(c: mlc.ConfigDict) -> None:
    _at_least(c, "model", 1, "d_model", "num_layers", "num_heads", "d_ff")
    _at_least(c, "model", 0, "vocab_size", "num_kv_heads", "head_dim", "num_decoder_layers")
    _at_least(c, "model", 1, "relative_buckets", "relative_max_distance")
    _between(c, "model", 0.0, 1.0, "dropout_rate", high_open=True)
    for name in ("rope_theta", "norm_eps"):
        _number(f"model.{name}", c[name], integer=False)
        if c[name] <= 0:
            raise _fail(f"model.{name}", c[name], "must be > 0")
    if c.num_kv_heads and c.num_heads % c.num_kv_heads:
        raise _fail(
            "model.num_kv_heads",
            c.num_kv_heads,
            f"must divide model.num_heads={c.num_heads} (grouped-query attention)",
        )
    _one_of(c, "model", "classifier_pooling", POOLINGS)


def _data(c: mlc.ConfigDict, task: str) -> None:
    _at_least(c, "data", 1, "max_length", "target_max_length", "num_train", "num_eval")
    _at_least(c, "data", 2, "vocab_size")
    buckets = c.length_buckets
    if not all(
        isinstance(b, numbers.Integral) and not isinstance(b, bool) and b > 0 for b in buckets
    ):
        raise _fail(
            "data.length_buckets",
            buckets,
            "must be positive integers, e.g. data.length_buckets=(64,128)",
        )
    if any(b > c.max_length for b in buckets):
        raise _fail(
            "data.length_buckets", buckets, f"must not exceed data.max_length={c.max_length}"
        )
    _at_least(c, "data", 0, "group_by_length")
    if c.group_by_length and not buckets:
        raise _fail(
            "data.group_by_length",
            c.group_by_length,
            "needs data.length_buckets (without them every batch is cut to data.max_length "
            "and grouping saves nothing); set e.g. data.length_buckets=(16,32,64) or "
            "data.group_by_length=0",
        )
    tokenizer = c.tokenizer
    if tokenizer not in ("byte", "sentencepiece") and not tokenizer.startswith(("hf:", "spm:")):
        raise _fail(
            "data.tokenizer", tokenizer, "must be byte, sentencepiece, spm:RUN_OR_FILE or hf:PATH"
        )
    _one_of(c, "data", "objective", ("", "lm", "span_corruption"))
    _at_least(c, "data", 0, "extra_ids")
    _one_of(c, "data", "spm_model_type", ("unigram", "bpe"))
    _between(c, "data", 0.0, 1.0, "harmful_fraction")
    if c.name in SYNTHETIC_MIN_LENGTH:
        # The synthetic tasks have their own word/letter vocabularies and fixed lengths.
        for name, default in (("tokenizer", "byte"), ("length_buckets", ()), ("objective", "")):
            value = tuple(c[name]) if name == "length_buckets" else c[name]
            if value != default:
                raise _fail(
                    f"data.{name}",
                    c[name],
                    f"is not used by {c.name} (its vocabulary is built in); leave "
                    f"it at {default!r} or choose a real dataset",
                )
        minimum = SYNTHETIC_MIN_LENGTH[c.name]
        if c.max_length < minimum:
            raise _fail(
                "data.max_length",
                c.max_length,
                f"must be >= {minimum} for {c.name} (a sentence and EOS)",
            )
    elif task in ("lm", "chat") and c.max_length < 2:
        raise _fail("data.max_length", c.max_length, "must be >= 2 for language modelling")


def _optim(c: mlc.ConfigDict) -> None:
    for name in ("learning_rate", "eps"):
        _number(f"optim.{name}", c[name], integer=False)
        if c[name] <= 0:
            raise _fail(f"optim.{name}", c[name], "must be > 0")
    _at_least(c, "optim", 0.0, "weight_decay", "grad_clip_norm")
    _between(c, "optim", 0.0, 1.0, "b1", "b2", "momentum", high_open=True)
    _between(c, "optim", 0.0, 1.0, "end_learning_rate_factor")
    _at_least(c, "optim", 0, "warmup_steps")
    _one_of(c, "optim", "name", ("adamw", "sgd"))
    _one_of(c, "optim", "schedule", ("cosine", "linear", "constant"))


def _train(c: mlc.ConfigDict) -> None:
    _at_least(c, "train", 1, "num_steps", "batch_size", "log_every", "microbatches")
    if c.batch_size % c.microbatches:
        raise _fail(
            "train.microbatches", c.microbatches,
            f"must divide train.batch_size={c.batch_size}",
        )  # fmt: skip
    _at_least(c, "train", 0, "eval_every", "num_devices", "seed")


def _mesh(c: mlc.ConfigDict) -> None:
    for name in ("data", "fsdp", "tensor"):
        _number(f"mesh.{name}", c[name], integer=True)
        if c[name] < 1 and c[name] != -1:
            raise _fail(f"mesh.{name}", c[name], "must be >= 1, or -1 for the remaining devices")
    if sum(c[name] == -1 for name in ("data", "fsdp", "tensor")) > 1:
        raise UserError("At most one of mesh.data, mesh.fsdp, mesh.tensor may be -1.")


def _eval(c: mlc.ConfigDict) -> None:
    _at_least(c, "eval", 1, "batch_size")
    _at_least(c, "eval", 0, "max_examples")
    if not c.split:
        raise _fail("eval.split", c.split, "must name a split, e.g. validation")
    a = c.attack
    _one_of(a, "eval.attack", "method", EVAL_ATTACKS)
    _one_of(a, "eval.attack", "norm", NORMS)
    _one_of(a, "eval.attack", "scope", SCOPES)
    _one_of(a, "eval.attack", "radius_unit", RADIUS_UNITS)
    _at_least(a, "eval.attack", 1, "steps")
    _at_least(a, "eval.attack", 0.0, "epsilon", "step_size")


def reported_metrics(config: mlc.ConfigDict) -> tuple[str, ...]:
    """Names of the evaluation metrics a run of ``config`` writes (``summary.json`` ``eval``)."""
    names = ["loss", "accuracy"]
    if config.task.name in ("lm", "seq2seq", "chat"):
        names.append("perplexity")
    if config.eval.attack.method != "none":
        names += [f"attack_{n}" for n in names]
    if config.task.name == "seq2seq" and config.eval.bleu:
        names.append("bleu")
    return tuple(names)


def _checkpoint(config: mlc.ConfigDict) -> None:
    c = config.checkpoint
    _at_least(c, "checkpoint", 1, "every_steps", "keep")
    _one_of(c, "checkpoint", "best_mode", ("max", "min"))
    metrics = reported_metrics(config)
    if c.best_metric and c.best_metric not in metrics:
        raise _fail(
            "checkpoint.best_metric",
            c.best_metric,
            f"must be an evaluation metric this run reports ({', '.join(metrics)}) or '' for none",
        )


def _perturb_tokens(config: mlc.ConfigDict) -> None:
    """``adv.perturb_tokens=prompt|response`` needs batches with a prompt (the chat task)."""
    _one_of(config.adv, "adv", "perturb_tokens", ("all", "prompt", "response"))
    error = needs_prompts(config.adv.perturb_tokens, config.task.name)
    if error is not None:
        raise error


def _method_task(config: mlc.ConfigDict) -> None:
    """A method that needs a kind of task (``cat``, targeted ``lat``: chat) gets it."""
    from llama_adv.adversarial import METHODS

    if config.adv.method not in METHODS.names():
        return  # the adv section's own validation names the unknown method
    need = METHODS.get(config.adv.method).required_task(config.adv)
    if need and config.task.name != need:
        hint = " or adv.lat.targeted=False (Casper et al.'s untargeted LAT)" * (
            config.adv.method == "lat"
        )
        raise UserError(
            f"adv.method={config.adv.method!r} needs task.name={need!r} (its attack and "
            f"losses read a chat batch's harmful rows and away targets), got "
            f"{config.task.name!r}; use a chat dataset{hint}."
        )


def _microbatches(config: mlc.ConfigDict) -> None:
    """A method whose update is not one sum over examples refuses microbatches."""
    from llama_adv.adversarial import METHODS

    count = config.train.microbatches
    if count == 1 or config.adv.method not in METHODS.names():
        return
    reason = METHODS.get(config.adv.method).microbatch_refusal
    if reason:
        raise UserError(
            f"train.microbatches={count} does not work with adv.method="
            f"{config.adv.method!r}: {reason}. Use train.microbatches=1 (and a smaller "
            "train.batch_size or model.remat=True for memory)."
        )


def _robustness(config: mlc.ConfigDict) -> None:
    try:  # the robustness package validates its own section
        from llama_adv.robustness import validate_robustness_config
    except ImportError:
        return
    validate_robustness_config(config.robustness)


CHECKS: tuple[Callable[[mlc.ConfigDict], None], ...] = (
    lambda config: _one_of(config.task, "task", "name", TASKS),
    lambda config: _at_least(config.task, "task", 0, "num_classes"),
    lambda config: _model(config.model),
    lambda config: _data(config.data, config.task.name),
    lambda config: _optim(config.optim),
    lambda config: _train(config.train),
    lambda config: _mesh(config.mesh),
    lambda config: _eval(config.eval),
    _checkpoint,
    _perturb_tokens,
    _method_task,
    _microbatches,
    _robustness,
)


def validate_config(config: mlc.ConfigDict) -> None:
    """Raises UserError naming the first field whose value is out of range or unknown.

    Args:
      config: a full run config (every section of ``get_default_config``).
    """
    for check in CHECKS:
        check(config)
