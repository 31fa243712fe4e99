"""Fixtures of the model tests: small padded batches."""

from __future__ import annotations

import numpy as np
import pytest
from _model_helpers import padded


@pytest.fixture
def seq2seq_batch():
    rng = np.random.default_rng(0)
    decoder = padded(rng, [6, 3], 6).at[:, 0].set(1)
    return {"encoder_inputs": padded(rng, [7, 4], 7), "decoder_inputs": decoder}


@pytest.fixture
def lm_batch():
    return {"inputs": padded(np.random.default_rng(1), [8, 5, 2], 8)}
