"""``llama-adv robustness --suite generation``: GCG and the embedding-space attack against a
chat run's harmful behaviours, with its utility (held-out perplexity, clean refusal rate).

With ``robustness.generation.behaviours = FILE.csv`` (AdvBench's ``goal,target`` layout)
the behaviours are that file's rows instead, so lm runs (an imported model fine-tuned as a
language model) are attacked too: their goals are fed as plain text (BOS first when the
run's LM stream has one), a chat run's inside its chat format.

The behaviours are the harmful rows of the attacked split that carry a harmful target
(``harmful`` 1, ``away_weight`` > 0): the user's message (the split's prompt text) is
attacked inside the run's chat format (``data.chat.turn_frame``: the suffix goes right
after the message, before the assistant header), and the target is the harmful
completion's ids without its final EOS. The utility rows of the split give the held-out
perplexity (their replies) and the clean refusal rate (their prompts). Writes
``workdir/robustness/generation/`` (``results.json``, ``table.md``, ``curve.png``,
``examples.jsonl``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llama_adv.data.chat import stop_id, turn_frame
from llama_adv.errors import UserError
from llama_adv.robustness.generation_embedding import EmbeddingAttackConfig
from llama_adv.robustness.generation_gcg import GCGConfig
from llama_adv.robustness.generation_judge import DEMO_TEST_PREFIXES
from llama_adv.robustness.generation_suite import run_generation_attacks
from llama_adv.robustness.loading import load_run


def behaviours(split, tokenizer, limit: int = 0) -> tuple[list, list, list]:
    """``(behaviours, heldout, clean_prompts)`` of a chat split: ``(message ids, target
    ids)`` of its harmful rows with a target, ``(message ids, reply ids)`` and message ids
    of its utility rows (at most ``limit`` behaviours; 0 = all)."""
    arrays = split.arrays
    if "away_weight" not in arrays or split.texts is None:
        raise UserError(
            "robustness --suite generation needs a chat split with harmful targets (task "
            "chat; e.g. data.name=synthetic_chat, or advbench with data.chat_refusal set)."
        )
    harmful = (arrays["harmful"] > 0) & (arrays["away_weight"].sum(1) > 0)
    rows = np.flatnonzero(harmful)
    if limit:
        rows = rows[:limit]
    if not len(rows):
        raise UserError("robustness --suite generation: the split has no harmful behaviours.")
    eos = stop_id(tokenizer)
    attacked = []
    for i in rows:
        target = arrays["away_targets"][i][arrays["away_weight"][i] > 0]
        target = target[:-1] if len(target) > 1 and target[-1] == eos else target
        attacked.append((tokenizer.encode(split.texts[i]), target.tolist()))
    utility = np.flatnonzero(arrays["harmful"] == 0)[: max(len(rows), 1) * 4]
    heldout = [
        (tokenizer.encode(split.texts[i]), arrays["targets"][i][arrays["target_weight"][i] > 0])
        for i in utility
    ]
    clean = [tokenizer.encode(split.texts[i]) for i in utility]
    return attacked, heldout, clean


def file_behaviours(path: str, tokenizer, limit: int = 0) -> list[tuple[list, list]]:
    """``(goal ids, target ids)`` of an AdvBench-style CSV (``goal,target`` header)."""
    from llama_adv.data.builders.base import RowChecker
    from llama_adv.data.builders.chat import read_csv

    if not Path(path).is_file():
        raise UserError(f"robustness.generation.behaviours={path!r}: no such file.")
    rows = [example for _, example in read_csv(Path(path), RowChecker(skip=False))]
    rows = rows[:limit] if limit else rows
    if not rows:
        raise UserError(f"robustness.generation.behaviours={path!r} holds no behaviours.")
    return [(tokenizer.encode(r["prompt"]), tokenizer.encode(r["response"])) for r in rows]


def _check(config, workdir) -> None:
    g = config.robustness.generation
    if config.task.name == "chat" or (config.task.name == "lm" and g.behaviours):
        return
    need = "a chat run" if config.task.name != "lm" else "robustness.generation.behaviours"
    raise UserError(
        f"robustness --suite generation needs a chat run (task.name=chat), or an lm run with "
        f"robustness.generation.behaviours=FILE.csv; {workdir} is a {config.task.name} run "
        f"(give it {need})."
    )


def attack_generation(prepared, command: str = "") -> dict[str, Any]:
    """Runs the generation suite on the prepared run (see the module docstring)."""
    _check(prepared.config, prepared.workdir)  # before the (slow) checkpoint load
    run = load_run(prepared.workdir, config=prepared.config)
    config, exp = run.config, run.exp
    rc = config.robustness
    g = rc.generation
    tokenizer = exp.dataset.tokenizer
    heldout = clean = None
    eos_id = tokenizer.eos_id
    if config.task.name == "chat":
        eos_id = stop_id(tokenizer)  # replies end at the template's end of turn
        split = exp.dataset.split(rc.split or config.eval.split)
        attacked, heldout, clean = behaviours(split, tokenizer, rc.limit)
        prefix, postfix = turn_frame(tokenizer)
    else:  # an lm run: plain-text goals, after BOS where its training stream has one
        from llama_adv.generation.prompts import format_prompt

        prefix = format_prompt(config, tokenizer, "")
        postfix = prefix[:0]
    if g.behaviours:
        attacked = file_behaviours(g.behaviours, tokenizer, rc.limit)
    refusal = config.data.get("chat_refusal", "")
    if config.data.name == "synthetic_chat" and not refusal:
        from llama_adv.data.synthetic_chat import REFUSAL as refusal
    phrases = (*DEMO_TEST_PREFIXES, refusal) if refusal else DEMO_TEST_PREFIXES
    gcg = GCGConfig(
        num_steps=g.gcg_steps,
        search_width=g.gcg_search_width,
        topk=g.gcg_topk,
        batch_size=g.gcg_batch_size,
        seed=rc.seed,
    )
    embedding = EmbeddingAttackConfig(
        num_steps=g.embedding_steps, step_size=g.embedding_step_size, perturb=g.embedding_perturb
    )
    results, _ = run_generation_attacks(
        exp.model,
        run.params,
        tokenizer,
        attacked,
        Path(prepared.workdir) / "robustness" / "generation",
        attacks=tuple(g.attacks),
        gcg=gcg,
        embedding=embedding,
        prefix=prefix.tolist(),
        postfix=postfix.tolist(),
        eos_id=eos_id,
        max_new_tokens=g.max_new_tokens,
        behaviour_batch=g.behaviour_batch,
        heldout=heldout,
        clean_prompts=clean,
        phrases=phrases,
        run_name=str(prepared.workdir),
        command=command,
    )
    return results
