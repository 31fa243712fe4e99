"""T5 span corruption (llama_adv.data.span_corruption): the mask's counts and layout, the
sentinels, and that inputs + targets give the window back."""

import numpy as np
import pytest

from llama_adv.data import span_corruption as sc
from llama_adv.errors import UserError

VOCAB = 1000  # sentinels count down from 999


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _reconstruct(inputs: np.ndarray, targets: np.ndarray) -> list[int]:
    """The window from the corrupted inputs and the targets (sentinel -> its span)."""
    spans, current = {}, None
    for t in targets.tolist():
        if t >= VOCAB - 100:
            current = spans.setdefault(t, [])
        else:
            current.append(t)
    out = []
    for t in inputs.tolist():
        out += spans[t] if t >= VOCAB - 100 else [t]
    return out


@pytest.mark.parametrize("length", [2, 7, 50, 284])
def test_mask_counts_and_layout_follow_t5(length):
    for seed in range(20):
        mask = sc.noise_mask(length, 0.15, 3.0, np.random.default_rng([seed]))
        noise, spans = sc.span_counts(length, 0.15, 3.0)
        assert mask.shape == (length,) and mask.sum() == noise
        assert len(_spans(mask)) == spans  # interleaved: spans never touch or overlap
        assert not mask[0] and mask[-1]  # non-noise first, a noise span last


def test_density_and_mean_span_length_match_their_settings():
    for density, mean in ((0.15, 3.0), (0.3, 5.0)):
        masks = [sc.noise_mask(500, density, mean, np.random.default_rng([i])) for i in range(200)]
        lengths = [e - s for m in masks for s, e in _spans(m)]
        assert np.mean([m.mean() for m in masks]) == pytest.approx(density, abs=0.005)
        assert np.mean(lengths) == pytest.approx(mean, rel=0.05)
        assert len(set(lengths)) > 3  # span lengths vary


def test_sentinels_are_consecutive_and_inputs_plus_targets_reconstruct():
    rng = np.random.default_rng(0)
    for i in range(50):
        tokens = rng.integers(4, VOCAB - 100, size=int(rng.integers(2, 300))).astype(np.int32)
        mask = sc.noise_mask(len(tokens), 0.15, 3.0, np.random.default_rng([7, i]))
        inputs, targets = sc.corrupt(tokens, mask, VOCAB)
        spans = len(_spans(mask))
        expected = list(range(VOCAB - 1, VOCAB - 1 - spans, -1))
        assert [t for t in inputs.tolist() if t >= VOCAB - 100] == expected
        assert [t for t in targets.tolist() if t >= VOCAB - 100] == expected
        assert targets[0] == VOCAB - 1  # each span's sentinel comes first
        assert len(inputs) == len(tokens) - mask.sum() + spans
        assert _reconstruct(inputs, targets) == tokens.tolist()


def test_arrays_fit_the_lengths_and_are_deterministic_per_window():
    docs = [np.arange(4, 4 + n, dtype=np.int32) for n in (300, 120, 57, 410)]
    kw = dict(inputs_length=64, targets_length=24, density=0.15, mean_span_length=3.0,
              vocab_size=VOCAB, extra_ids=100, bos=1, eos=2, seed=3)  # fmt: skip
    a = sc.span_corruption_arrays(docs, **kw)
    b = sc.span_corruption_arrays(docs[:2], **kw)
    n = sc.window_length(64, 24, 0.15, 3.0)
    windows = -(-(sum(len(d) + 1 for d in docs)) // n)
    assert a["encoder_inputs"].shape == (windows, 64) and a["targets"].shape == (windows, 24)
    # nothing is cut: the rows, without their final EOS, give back the EOS-joined documents
    stream = []
    for inputs, targets in zip(a["encoder_inputs"], a["targets"], strict=True):
        inputs, targets = inputs[inputs != 0], targets[targets != 0]
        assert inputs[-1] == 2 and targets[-1] == 2
        stream += _reconstruct(inputs[:-1], targets[:-1])
    assert stream == [t for d in docs for t in [*d.tolist(), 2]]
    # window i depends on (seed, i) and its tokens only
    np.testing.assert_array_equal(a["encoder_inputs"][:3], b["encoder_inputs"][:3])
    assert (a["decoder_inputs"][:, 0] == 1).all()


def test_bad_settings_are_user_errors():
    docs = [np.arange(4, 200, dtype=np.int32)]
    kw = dict(inputs_length=64, targets_length=24, vocab_size=VOCAB, bos=1, eos=2, seed=0)
    with pytest.raises(UserError, match="extra_ids"):
        sc.span_corruption_arrays(docs, density=0.15, mean_span_length=3.0, extra_ids=0, **kw)
    with pytest.raises(UserError, match="density"):
        sc.span_corruption_arrays(docs, density=1.5, mean_span_length=3.0, extra_ids=100, **kw)
    with pytest.raises(UserError, match="too short"):
        sc.window_length(2, 2, 0.15, 3.0)
