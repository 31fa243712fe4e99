"""Tiny runs for tests of trained-run commands: config overrides of the shrunk quickstart
(``configs/quickstart.py:tiny``) and one training call."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUIET = ("train.progress_bar=False",)

# A decoder-only language model on synthetic_lm (shapes and plumbing, not quality).
LM = ("data.name=synthetic_lm", "task.name=lm", "data.num_eval=16", "eval.attack.method=none",
      "checkpoint.best_metric=")  # fmt: skip

# A tiny encoder-decoder on synthetic_reverse.
SEQ2SEQ = (
    "model.name=encoder_decoder", "data.name=synthetic_reverse", "task.name=seq2seq",
    "data.max_length=8", "data.target_max_length=8", "data.num_eval=40",
    "eval.attack.method=none", "checkpoint.best_metric=", "train.progress_bar=False",
)  # fmt: skip


def train_tiny(workdir: Path, *overrides: str) -> Path:
    """Trains ``configs/quickstart.py:tiny`` with ``overrides`` in ``workdir``."""
    from llama_adv.config import load_config
    from llama_adv.train import train_and_evaluate

    config = load_config(f"{REPO / 'configs' / 'quickstart.py'}:tiny", (*QUIET, *overrides))
    train_and_evaluate(config, workdir)
    return workdir
