"""Greedy Coordinate Gradient (GCG; Zou et al. 2023, "Universal and Transferable
Adversarial Attacks on Aligned Language Models"), following nanoGCG
(github.com/GraySwanAI/nanoGCG, ``nanogcg/gcg.py``, v0.3.0), batched over behaviours.

One step, per behaviour (row of a :class:`~llama_adv.robustness.generation.Layout`):

1. the gradient of the target loss w.r.t. the one-hot suffix ``[S, vocab]``;
2. disallowed ids get gradient ``+inf``; the ``topk`` most negative ids per position;
3. ``search_width`` candidates, each replacing ``n_replace`` distinct uniformly drawn
   positions with a uniformly drawn top-k id of that position (nanoGCG's
   ``sample_ids_from_grad``);
4. (``filter_ids``) candidates whose decode-then-encode changes the ids are dropped
   (nanoGCG's ``filter_ids``; a host round trip through the tokenizer, so that mode runs
   one jitted step per iteration instead of one scan);
5. every candidate's loss in one jitted call (a ``lax.map`` over chunks of
   ``batch_size`` candidates); the best one becomes the iterate.

nanoGCG defaults (``GCGConfig``): ``num_steps=250``, ``search_width=512``, ``topk=256``,
``n_replace=1``, ``buffer_size=0``, ``optim_str_init="x x ... x"`` (20 x's),
``allow_non_ascii=False``, ``filter_ids=True``, ``early_stop=False``, loss = mean
cross-entropy over target tokens. Its ``buffer_size=0`` keeps a one-entry buffer that is
*overwritten* every step, so the iterate is each step's best candidate even when it is
worse than the last; what nanoGCG returns is the best over steps (``best_loss`` /
``best_string`` = argmin of the per-step losses). Both are kept here: ``losses`` is the
per-step curve, ``best_loss`` / ``best_suffix`` the best so far (which never increases;
the initial suffix counts as a candidate of step 0). ``buffer_size=1`` makes the iterate
the best so far (nanoGCG adds to a full buffer only when the loss is lower); larger
buffers are not supported. Disallowed ids with ``allow_non_ascii=False`` are nanoGCG's
``get_nonascii_toks``: ids whose decoding is not printable ASCII, and the special ids.
``early_stop`` (nanoGCG: stop once any candidate's teacher-forced argmax is the target)
freezes a row once its best suffix matches; the run ends when every row has.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.errors import UserError
from llama_adv.models.base import Params
from llama_adv.robustness.generation import Layout, place, target_logits, target_loss

#: nanoGCG's ``GCGConfig.optim_str_init``.
OPTIM_STR_INIT = "x x x x x x x x x x x x x x x x x x x x"


@dataclasses.dataclass(frozen=True)
class GCGConfig:
    """Defaults: nanoGCG ``GCGConfig`` (v0.3.0); ``batch_size`` 0 = all candidates in one
    forward pass (nanoGCG's ``None``)."""

    num_steps: int = 250
    search_width: int = 512
    topk: int = 256
    n_replace: int = 1
    buffer_size: int = 0
    batch_size: int = 0
    early_stop: bool = False
    allow_non_ascii: bool = False
    filter_ids: bool = True
    seed: int = 0

    def __post_init__(self):
        if min(self.search_width, self.topk, self.n_replace) < 1 or self.num_steps < 0:
            raise UserError("GCG: search_width, topk and n_replace must be >= 1, num_steps >= 0.")
        if self.buffer_size not in (0, 1):
            raise UserError(
                f"GCG buffer_size {self.buffer_size}: only 0 (nanoGCG's default) "
                "and 1 are supported."
            )
        if self.batch_size < 0:
            raise UserError(f"GCG batch_size must be >= 0, got {self.batch_size}.")


@flax.struct.dataclass
class GCGState:
    """Per-row search state (``[B, S]`` suffixes, ``[B]`` the rest)."""

    suffix: jax.Array  # the iterate
    loss: jax.Array
    best_suffix: jax.Array
    best_loss: jax.Array
    best_match: jax.Array  # teacher-forced target match of best_suffix
    success_step: jax.Array  # first step whose chosen candidate matched, -1 if none


def allowed_tokens(tokenizer, vocab_size: int, *, allow_non_ascii: bool = False) -> np.ndarray:
    """``[vocab_size]`` bool, the ids GCG may put in the suffix: never the tokenizer's
    pad/bos/eos/unk or ids past its vocabulary; with ``allow_non_ascii`` False also not ids
    whose decoding is not printable ASCII (nanoGCG's ``get_nonascii_toks``)."""
    allowed = np.zeros(vocab_size, bool)
    n = min(vocab_size, int(tokenizer.vocab_size))
    for i in range(n):
        text = tokenizer.decode([i])
        allowed[i] = allow_non_ascii or (text.isascii() and text.isprintable())
    for name in ("pad_id", "bos_id", "eos_id", "unk_id"):
        special = getattr(tokenizer, name, None)
        if special is not None and 0 <= special < vocab_size:
            allowed[special] = False
    return allowed


def retokenization_filter(tokenizer) -> Callable[[np.ndarray], np.ndarray]:
    """nanoGCG's ``filter_ids``: ``[..., S]`` candidate ids -> ``[...]`` bool, true where
    encoding the decoded suffix gives the same ids back."""

    def valid(candidates: np.ndarray) -> np.ndarray:
        flat = candidates.reshape(-1, candidates.shape[-1])
        ok = [list(tokenizer.encode(tokenizer.decode(row))) == list(row) for row in flat]
        return np.asarray(ok, bool).reshape(candidates.shape[:-1])

    return valid


def token_gradient(model, params: Params, layout: Layout, suffix: jax.Array) -> jax.Array:
    """``[B, S, vocab]`` gradient of each row's target loss w.r.t. its one-hot suffix."""
    table = model.embedding_table(params)
    tokens = layout.with_suffix(suffix)
    base = model.embed(params, layout.batch(tokens))[layout.stream]

    def loss(onehot):
        embedded = place(layout.suffix_index, onehot @ table, base)
        losses, _ = target_loss(target_logits(model, params, layout, embedded, tokens), layout)
        return jnp.sum(losses)  # rows are independent

    return jax.grad(loss)(jax.nn.one_hot(suffix, table.shape[0], dtype=table.dtype))


def sample_candidates(
    key: jax.Array,
    suffix: jax.Array,
    grad: jax.Array,
    allowed: jax.Array,
    *,
    search_width: int,
    topk: int,
    n_replace: int,
) -> jax.Array:
    """nanoGCG's ``sample_ids_from_grad`` per row: ``[B, S]`` suffix, ``[B, S, V]``
    gradient, ``[V]`` allowed ids -> ``[B, search_width, S]`` candidates."""
    b, s = suffix.shape
    grad = jnp.where(allowed[None, None, :], grad, jnp.inf)
    top = jax.lax.top_k(-grad, topk)[1]  # [B, S, K]
    k_pos, k_val = jax.random.split(key)
    positions = jnp.argsort(jax.random.uniform(k_pos, (b, search_width, s)), axis=-1)
    positions = positions[..., :n_replace]  # [B, W, n] distinct positions
    choice = jax.random.randint(k_val, (b, search_width, n_replace), 0, topk)
    options = jnp.take_along_axis(top[:, None], positions[..., None], axis=2)  # [B, W, n, K]
    values = jnp.take_along_axis(options, choice[..., None], axis=3)[..., 0]  # [B, W, n]
    candidates = jnp.broadcast_to(suffix[:, None, :], (b, search_width, s))
    hit = positions[..., None] == jnp.arange(s)  # [B, W, n, S]
    replaced = jnp.sum(jnp.where(hit, values[..., None], 0), axis=2)
    return jnp.where(jnp.any(hit, axis=2), replaced, candidates).astype(suffix.dtype)


def candidate_losses(
    model, params: Params, layout: Layout, candidates: jax.Array, batch_size: int = 0
) -> tuple[jax.Array, jax.Array]:
    """Target loss ``[B, W]`` and teacher-forced match ``[B, W]`` of every candidate suffix
    ``[B, W, S]``: one batched forward pass per chunk of ``batch_size`` candidates (0 = all
    at once), chunks run by ``lax.map`` inside the caller's jit."""
    b, w, s = candidates.shape
    n = b * w
    size = n if batch_size <= 0 else min(batch_size, n)
    chunks = -(-n // size)
    rows = jnp.repeat(jnp.arange(b), w)
    flat = candidates.reshape(n, s)
    pad = chunks * size - n  # filler rows (copies of row 0), dropped below
    rows = jnp.concatenate([rows, jnp.zeros((pad,), rows.dtype)]).reshape(chunks, size)
    flat = jnp.concatenate([flat, jnp.broadcast_to(flat[:1], (pad, s))]).reshape(chunks, size, s)

    def one(args):
        index, suffixes = args
        sub = layout.rows(index)
        return target_loss(target_logits(model, params, sub, tokens=sub.with_suffix(suffixes)), sub)

    losses, matches = jax.lax.map(one, (rows, flat))
    return losses.reshape(-1)[:n].reshape(b, w), matches.reshape(-1)[:n].reshape(b, w)


def init_state(model, params: Params, layout: Layout) -> GCGState:
    """The state at the layout's initial suffix (its loss is step 0's best)."""
    suffix = layout.suffixes()
    loss, match = target_loss(target_logits(model, params, layout), layout)
    step = jnp.where(match, 0, -1).astype(jnp.int32)
    return GCGState(suffix, loss, suffix, loss, match, step)


def propose(model, params, layout, state: GCGState, key, allowed, config: GCGConfig, topk: int):
    """``[B, W, S]`` candidates from the iterate's token gradient."""
    grad = token_gradient(model, params, layout, state.suffix)
    return sample_candidates(
        key,
        state.suffix,
        grad,
        allowed,
        search_width=config.search_width,
        topk=topk,
        n_replace=config.n_replace,
    )


def update(model, params, layout, state: GCGState, candidates, valid, step, config: GCGConfig):
    """Evaluates the candidates (``valid`` ``[B, W]`` bool masks filtered ones) and moves
    the state; returns ``(state, chosen loss [B])``. Rows frozen by ``early_stop`` keep
    their state; a row with no valid candidate keeps its iterate."""
    losses, matches = candidate_losses(model, params, layout, candidates, config.batch_size)
    losses = jnp.where(valid, losses, jnp.inf)
    pick = jnp.argmin(losses, axis=1)
    loss = jnp.take_along_axis(losses, pick[:, None], axis=1)[:, 0]
    match = jnp.take_along_axis(matches, pick[:, None], axis=1)[:, 0]
    chosen = jnp.take_along_axis(candidates, pick[:, None, None], axis=1)[:, 0]
    found = jnp.isfinite(loss)
    # buffer_size 0 (nanoGCG): the step's best replaces the iterate; 1: only if lower.
    take = found if config.buffer_size == 0 else found & (loss < state.loss)
    better = found & (loss < state.best_loss)
    new = GCGState(
        suffix=jnp.where(take[:, None], chosen, state.suffix),
        loss=jnp.where(take, loss, state.loss),
        best_suffix=jnp.where(better[:, None], chosen, state.best_suffix),
        best_loss=jnp.where(better, loss, state.best_loss),
        best_match=jnp.where(better, match, state.best_match),
        success_step=jnp.where(
            (state.success_step < 0) & found & match, step, state.success_step
        ).astype(jnp.int32),
    )
    if config.early_stop:
        frozen = state.best_match
        new = jax.tree.map(
            lambda a, b: jnp.where(frozen.reshape(-1, *[1] * (a.ndim - 1)), a, b), state, new
        )
        loss = jnp.where(frozen, state.loss, loss)
    return new, jnp.where(found, loss, state.loss)


@dataclasses.dataclass(frozen=True)
class _Compiled:
    init: Callable
    propose: Callable
    update: Callable
    scan: Callable


@functools.lru_cache(maxsize=8)
def _compiled(model, config: GCGConfig, topk: int) -> _Compiled:
    """The jitted pieces of :func:`run_gcg` for one model and config, kept so that
    further calls (more groups of behaviours of the same shape) do not recompile."""

    def propose_at(p, lay, state, key, allowed, i):
        return propose(model, p, lay, state, jax.random.fold_in(key, i), allowed, config, topk)

    def update_at(p, lay, state, cands, valid, i):
        return update(model, p, lay, state, cands, valid, i + 1, config)

    def scan(p, lay, state, key, allowed):
        valid = jnp.ones((lay.tokens.shape[0], config.search_width), bool)

        def body(state, i):
            def run(state):
                cands = propose_at(p, lay, state, key, allowed, i)
                return update_at(p, lay, state, cands, valid, i)

            def skip(state):
                return state, state.loss

            if config.early_stop:  # nothing left to do: skip the step's compute
                state, loss = jax.lax.cond(jnp.all(state.best_match), skip, run, state)
            else:
                state, loss = run(state)
            return state, (loss, state.best_loss)

        return jax.lax.scan(body, state, jnp.arange(config.num_steps))

    return _Compiled(
        init=jax.jit(lambda p, lay: init_state(model, p, lay)),
        propose=jax.jit(propose_at),
        update=jax.jit(update_at),
        scan=jax.jit(scan),
    )


def run_gcg(
    model,
    params: Params,
    layout: Layout,
    config: GCGConfig = GCGConfig(),
    *,
    allowed: np.ndarray | None = None,
    filter_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    log: Callable[[int, np.ndarray], None] | None = None,
) -> dict[str, np.ndarray]:
    """GCG on every row of ``layout`` (its suffix is the initial suffix).

    Args:
      allowed: ``[vocab]`` bool, the ids the suffix may take (:func:`allowed_tokens`);
        default: every id but 0..3 (padding and the project's specials).
      filter_fn: candidate validity on the host (:func:`retokenization_filter`), used
        when ``config.filter_ids``; then each step is one jitted call plus the filter,
        otherwise all steps run in one jitted ``lax.scan``.
      log: called as ``log(step, best_loss [B])`` after each step in the per-step mode.

    Returns numpy arrays: ``best_suffix`` ``[B, S]``, ``best_loss`` ``[B]``,
    ``best_match`` ``[B]`` (teacher-forced target match of ``best_suffix``), ``losses``
    ``[num_steps, B]`` (each step's chosen candidate), ``best_losses``
    ``[num_steps + 1, B]`` (best so far; 0 = the initial suffix), ``success_step`` ``[B]``
    (first step whose chosen candidate matched; 0 = the initial suffix; -1 = never),
    ``suffix`` ``[B, S]`` (the final iterate).
    """
    if layout.suffix_length == 0:
        raise UserError("GCG needs a suffix in the layout (build_layout(..., suffix=...)).")
    vocab = int(model.embedding_table(params).shape[0])
    if allowed is None:
        allowed = np.arange(vocab) >= 4
    allowed = np.asarray(allowed, bool)
    if allowed.shape != (vocab,) or not allowed.any():
        raise UserError(f"GCG allowed ids: need a [{vocab}] mask with at least one id.")
    topk = min(config.topk, int(allowed.sum()))
    allowed_j = jnp.asarray(allowed)
    key = jax.random.key(config.seed)
    fns = _compiled(model, config, topk)
    state = fns.init(params, layout)
    b = layout.tokens.shape[0]
    if config.filter_ids and filter_fn is not None:
        losses, bests = [], [np.asarray(state.best_loss)]
        for i in range(config.num_steps):
            if config.early_stop and bool(np.all(np.asarray(state.best_match))):
                losses.append(np.asarray(state.loss))
                bests.append(np.asarray(state.best_loss))
                continue
            cands = fns.propose(params, layout, state, key, allowed_j, i)
            valid = jnp.asarray(filter_fn(np.asarray(cands)))
            state, loss = fns.update(params, layout, state, cands, valid, i)
            losses.append(np.asarray(loss))
            bests.append(np.asarray(state.best_loss))
            if log is not None:
                log(i + 1, bests[-1])
        losses = np.stack(losses) if losses else np.zeros((0, b), np.float32)
        best_losses = np.stack(bests)
    else:
        initial = np.asarray(state.best_loss)
        state, (losses, bests) = fns.scan(params, layout, state, key, allowed_j)
        losses = np.asarray(losses)
        best_losses = np.concatenate([initial[None], np.asarray(bests)])
    return {
        "suffix": np.asarray(state.suffix),
        "best_suffix": np.asarray(state.best_suffix),
        "best_loss": np.asarray(state.best_loss),
        "best_match": np.asarray(state.best_match),
        "success_step": np.asarray(state.success_step),
        "losses": losses,
        "best_losses": best_losses,
    }
