"""Two small runs trained once per session: clean and FGM at ``TRAIN_EPSILON``.

The radius is the quickstart's, below the embeddings' size (a sequence's embedding has L2
norm of about 0.5 here); much larger training radii teach the model to mask its gradients instead of
becoming robust, and then PGD beats both models equally.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAIN_EPSILON = 0.3


def train_run(workdir: Path, method: str, steps: int = 500) -> Path:
    from llama_adv.config import load_config
    from llama_adv.train import train_and_evaluate

    config = load_config(
        f"{REPO / 'configs' / 'quickstart.py'}:method={method},steps={steps},"
        f"epsilon={TRAIN_EPSILON}",
        [
            "data.num_eval=200",
            "eval.attack.method=none",
            "eval.batch_size=100",
            "checkpoint.every_steps=100000",
            "train.progress_bar=False",
            "robustness.batch_size=100",
        ],
    )
    train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="session")
def train_epsilon() -> float:
    return TRAIN_EPSILON


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("runs") / "none", "none")


@pytest.fixture(scope="session")
def fgm_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("runs") / "fgm", "fgm")
