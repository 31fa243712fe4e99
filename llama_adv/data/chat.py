"""Chat examples -> the fixed-width arrays of the ``chat`` task.

An example is a prompt, a response and optionally an *away* response: the harmful target
a safe model must not produce (CAT/LAT's "away" completion; its response is then the safe
"toward" reply). Each is rendered by the tokenizer's :class:`ChatFormat` and tokenized;
``seq = prompt ids + response ids`` (the built-in format adds BOS before the prompt and
EOS after the response; a template renders its own markers, and the ids are those of
the whole rendered conversation: :func:`template_responses`) and, right-padded to
``max_length``:

- ``inputs`` = seq[:-1], ``targets`` = seq[1:] ``[N, max_length]`` int32;
- ``target_weight`` ``[N, max_length]`` float32: 1 where the target is a response token
  (the last prompt position predicts the first response token; the final EOS / end-of-turn
  is a target), 0 on prompt targets and padding;
- ``prompt_mask`` ``[N, max_length]`` bool: true on the prompt tokens of ``inputs``;
- ``harmful`` ``[N]`` int32: 1 on harmful prompts (AdvBench rows, flagged chat-file rows,
  the synthetic task's harmful prompts);
- when any example has an away response, also ``away_inputs``, ``away_targets``,
  ``away_weight`` ``[N, max_length]``: the same layout for ``prompt + away``. The prompt
  tokens sit at the same positions as in ``inputs`` (so a perturbation of the prompt's
  embeddings applies to both sequences); rows without an away response repeat the
  (toward) sequence with ``away_weight`` 0.

Truncation (``max_length + 1`` tokens fit): the prompt is kept whole when it leaves room
for ``min(len(response), max_length // 4)`` (at least 1) response tokens, otherwise its
*leading* tokens are dropped (left truncation keeps the generation header next to the
response); the response is then cut on the right (losing its EOS: the example teaches
the start of the reply). The away response is cut the same way after the same prompt.

``data.chat_refusal`` (non-empty): a harmful example without an away response gets the
refusal as its response and its original response (AdvBench's ``target``) as away.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llama_adv.data.base import Split
from llama_adv.data.chat_template import ChatFormat, chat_format
from llama_adv.data.tokenizers import PAD

AWAY_FIELDS = ("away_inputs", "away_targets", "away_weight")


def fit(prompt: np.ndarray, response: np.ndarray, max_length: int) -> tuple[int, int]:
    """``(first kept prompt token, kept response tokens)`` so that ``max_length + 1``
    tokens hold them (see the module docstring)."""
    room = max_length + 1
    reserve = max(1, min(len(response), max_length // 4))
    start = max(0, len(prompt) + reserve - room)
    return start, min(len(response), room - (len(prompt) - start))


def _rows(prompts, responses, max_length: int, starts=None):
    """``inputs``, ``targets``, ``target_weight``, ``prompt_mask`` and the prompt starts
    used (``starts`` given: those, for the away sequences)."""
    n = len(prompts)
    inputs = np.full((n, max_length), PAD, np.int32)
    targets = np.full((n, max_length), PAD, np.int32)
    weight = np.zeros((n, max_length), np.float32)
    prompt_mask = np.zeros((n, max_length), bool)
    used = []
    for row, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        start, keep = fit(p, r, max_length)
        if starts is not None:  # the away sequence: the same prompt as the toward one
            start = starts[row]
            keep = min(len(r), max_length + 1 - (len(p) - start))
        used.append(start)
        p = p[start:]
        seq = np.concatenate([p, r[:keep]]).astype(np.int32)
        n_in = len(seq) - 1
        inputs[row, :n_in] = seq[:-1]
        targets[row, :n_in] = seq[1:]
        weight[row, len(p) - 1 : n_in] = 1.0
        prompt_mask[row, : min(len(p), n_in)] = True
    return inputs, targets, weight, prompt_mask, used


def template_responses(
    tokenizer, prompt_ids: list[np.ndarray], heads: list[str], tails: list[str]
) -> list[np.ndarray]:
    """Response ids of templated examples: the tokens of the whole rendered conversation
    after the prompt's, so that ``prompt + response`` ids are exactly ``transformers``'
    ``apply_chat_template(..., tokenize=True)`` of the conversation, while the prompt's ids
    are those of the prompt alone (what generation feeds). Where the conversation's ids do
    not start with the prompt's (a token straddling the boundary), the response text is
    encoded alone instead (counted in a one-line note)."""
    full = tokenizer.encode_batch([h + t for h, t in zip(heads, tails, strict=True)])
    out, straddled = [], 0
    for p, f, tail in zip(prompt_ids, full, tails, strict=True):
        if len(f) > len(p) and np.array_equal(f[: len(p)], p):
            out.append(f[len(p) :])
        else:
            straddled += 1
            out.append(np.asarray(tokenizer.encode(tail), np.int32))
    if straddled:
        print(
            f"data: {straddled} of {len(full)} chat examples have a token across the "
            "prompt/response boundary; their response was tokenized on its own"
        )
    return out


def prompt_ids(tokenizer, text: str, fmt: ChatFormat | None = None) -> np.ndarray:
    """The ids ``[P]`` a chat model reads before answering ``text``, as in training (the
    formatted prompt, after BOS under the built-in format): what generation feeds it."""
    fmt = chat_format(tokenizer) if fmt is None else fmt
    ids = np.asarray(tokenizer.encode(fmt.prompt(text)), np.int32)
    if fmt.adds_specials:
        ids = np.concatenate([np.asarray([tokenizer.bos_id], np.int32), ids])
    return ids


def stop_id(tokenizer, fmt: ChatFormat | None = None) -> int:
    """The id a chat reply ends with: the template's ``eos_token`` when it is one token
    (LLaMA-3-Instruct's ``<|eot_id|>``, not the tokenizer's ``<|end_of_text|>``), else the
    tokenizer's EOS (the built-in format)."""
    fmt = chat_format(tokenizer) if fmt is None else fmt
    eos = getattr(fmt, "special_tokens", {}).get("eos_token")
    if eos:
        ids = tokenizer.encode(eos)
        if len(ids) == 1:
            return int(ids[0])
    return int(tokenizer.eos_id)


MARK = "\x00MESSAGE\x00"  # stands for the user's message when splitting the format


def turn_frame(tokenizer, fmt: ChatFormat | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(prefix, postfix)`` ids around the user's message in the formatted prompt (BOS in
    the prefix), so an attack can put a suffix right after the message, inside the turn
    (GCG's layout). Each side is tokenized on its own, like the message between them."""
    fmt = chat_format(tokenizer) if fmt is None else fmt
    before, _, after = fmt.prompt(MARK).partition(MARK)
    prefix = [int(i) for i in tokenizer.encode(before)] if before.strip() else []
    if fmt.adds_specials:
        prefix = [tokenizer.bos_id, *prefix]
    postfix = [int(i) for i in tokenizer.encode(after)] if after.strip() else []
    return np.asarray(prefix, np.int32), np.asarray(postfix, np.int32)


def encode_chat(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    aways: Sequence[str] | None = None,
    harmful: Sequence[int] | None = None,
    max_length: int = 32,
    fmt: ChatFormat | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of the module docstring for texts (``aways[i] == ""``: no away)."""
    fmt = chat_format(tokenizer) if fmt is None else fmt
    n = len(prompts)
    aways = list(aways) if aways is not None else [""] * n
    head = [fmt.prompt(p) for p in prompts]
    tail = [fmt.response(p, r) for p, r in zip(prompts, responses, strict=True)]
    prompt_ids = tokenizer.encode_batch(head)
    if fmt.adds_specials:
        bos, eos = np.asarray([tokenizer.bos_id]), np.asarray([tokenizer.eos_id])
        prompt_ids = [np.concatenate([bos, p]) for p in prompt_ids]
        response_ids = [np.concatenate([r, eos]) for r in tokenizer.encode_batch(tail)]
    else:
        response_ids = template_responses(tokenizer, prompt_ids, head, tail)
    inputs, targets, weight, prompt_mask, starts = _rows(prompt_ids, response_ids, max_length)
    arrays = {
        "inputs": inputs,
        "targets": targets,
        "target_weight": weight,
        "prompt_mask": prompt_mask,
        "harmful": np.asarray(harmful if harmful is not None else [0] * n, np.int32),
    }
    has_away = [bool(a) for a in aways]
    if any(has_away):
        away_ids = list(response_ids)
        rows = [i for i, h in enumerate(has_away) if h]
        texts = [fmt.response(prompts[i], aways[i]) for i in rows]
        if fmt.adds_specials:
            encoded = [np.concatenate([ids, eos]) for ids in tokenizer.encode_batch(texts)]
        else:
            encoded = template_responses(
                tokenizer, [prompt_ids[i] for i in rows], [head[i] for i in rows], texts
            )
        for i, ids in zip(rows, encoded, strict=True):
            away_ids[i] = ids
        a_in, a_tgt, a_w, _, _ = _rows(prompt_ids, away_ids, max_length, starts)
        a_w *= np.asarray(has_away, np.float32)[:, None]
        arrays.update(away_inputs=a_in, away_targets=a_tgt, away_weight=a_w)
    return arrays


def apply_refusal(
    responses: list[str], aways: list[str], harmful: Sequence[int], refusal: str
) -> tuple[list[str], list[str]]:
    """``data.chat_refusal``: harmful examples without an away response answer with
    ``refusal`` and keep their response as the away target."""
    if not refusal:
        return responses, aways
    responses, aways = list(responses), list(aways)
    for i, flag in enumerate(harmful):
        if flag and not aways[i]:
            responses[i], aways[i] = refusal, responses[i]
    return responses, aways


def chat_split(
    tokenizer,
    prompts: list[str],
    responses: list[str],
    aways: list[str],
    harmful: Sequence[int],
    max_length: int,
    refusal: str = "",
    length_buckets: tuple[int, ...] = (),
) -> Split:
    """A chat :class:`Split`; ``texts`` are the prompts, ``references`` the responses
    (after ``refusal``), for generation and inspection."""
    responses, aways = apply_refusal(responses, aways, harmful, refusal)
    arrays = encode_chat(tokenizer, prompts, responses, aways, harmful, max_length)
    return Split(arrays, list(prompts), list(responses), length_buckets=length_buckets)
