"""Prompts for ``llama-adv generate``: reading them, and turning one into the token ids the
run's model saw at training time (:func:`format_prompt`, the one place a chat template
hooks in)."""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections as mlc
import numpy as np

from llama_adv.errors import UserError

#: JSONL fields holding a prompt, in the order they are looked for
PROMPT_FIELDS = ("prompt", "instruction")


def read_prompts(
    prompts: list[str] | None = None, prompts_file: str | Path | None = None
) -> list[str]:
    """The ``--prompt`` texts, then those of ``--prompts-file``: one prompt per non-empty
    line, or, for a ``.jsonl`` file, the ``prompt`` (else ``instruction``) field of each
    JSON object (an instruction's non-empty ``input`` field follows it after a blank line,
    the Alpaca layout).

    Raises:
      UserError: no prompt at all, a missing or undecodable file, a bad JSONL row.
    """
    texts = list(prompts or [])
    if prompts_file is not None:
        texts += _read_file(Path(prompts_file))
    if not texts:
        raise UserError("generate needs prompts: --prompt TEXT (repeatable) or --prompts-file F.")
    return texts


def _read_file(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"--prompts-file {path} does not exist.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise UserError(f"--prompts-file {path} is not UTF-8 text ({error.reason}).") from None
    if path.suffix != ".jsonl":
        texts = [line for line in lines if line.strip()]
    else:
        texts = [_jsonl_prompt(line, f"{path}:{n}") for n, line in enumerate(lines, 1)
                 if line.strip()]  # fmt: skip
    if not texts:
        raise UserError(f"--prompts-file {path} holds no prompt.")
    return texts


def _jsonl_prompt(line: str, where: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not a JSON object ({error.msg}).") from None
    field = next((f for f in PROMPT_FIELDS if isinstance(row, dict) and f in row), None)
    if field is None or not isinstance(row[field], str):
        raise UserError(f"{where}: expected an object with a string field prompt or instruction.")
    text = row[field]
    if field == "instruction" and isinstance(row.get("input"), str) and row["input"].strip():
        text = f"{text}\n\n{row['input']}"
    return text


def format_prompt(config: mlc.ConfigDict, tokenizer, text: str) -> np.ndarray:
    """The token ids ``[P]`` (int32) a prompt is fed as, laid out like the run's training
    inputs (:mod:`llama_adv.data.encode`, :mod:`llama_adv.data.synthetic`):

    - ``lm``: the text's ids, after BOS where the training stream has one before each
      example (the synthetic corpus; TFDS text corpora are packed without BOS);
    - ``seq2seq``, encoder-decoder: the encoder inputs, ids[:max_length-1] + EOS (the
      decoder then starts from BOS);
    - ``seq2seq``, decoder-only (prefix LM): those encoder inputs, then the decoder's BOS.

    - ``chat``: the prompt in the run's chat format (the tokenizer's template, else the
      built-in one), as the training data lays it out (:func:`llama_adv.data.chat.prompt_ids`).
    """
    if config.task.name == "chat":
        from llama_adv.data.chat import prompt_ids

        return prompt_ids(tokenizer, text)
    ids = [int(i) for i in tokenizer.encode(text)]
    if config.task.name == "seq2seq":
        ids = ids[: config.data.max_length - 1] + [tokenizer.eos_id]
        if config.model.name != "encoder_decoder":
            ids.append(tokenizer.bos_id)
    elif _lm_stream_has_bos(config):
        ids = [tokenizer.bos_id] + ids
    return np.asarray(ids, np.int32)


def _lm_stream_has_bos(config: mlc.ConfigDict) -> bool:
    """Whether the LM training stream puts BOS before each example: the synthetic corpus
    does (``synthetic.language_model``), LM packing of real corpora does not
    (``encode.pack_lm``)."""
    return config.data.name.startswith("synthetic")
