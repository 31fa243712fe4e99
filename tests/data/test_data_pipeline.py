"""The input pipeline: deterministic shuffling, exact resume, shards, buckets, eval coverage."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from llama_adv.data import encode
from llama_adv.data.base import Split
from llama_adv.data.pipeline import TrainStream, eval_batches, example_lengths, num_shapes
from llama_adv.errors import UserError


def _split(n: int = 103, width: int = 16, buckets=()) -> Split:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, width + 1, n)
    inputs = np.where(np.arange(width)[None] < lengths[:, None], 7, 0).astype(np.int32)
    return Split({"inputs": inputs, "label": np.arange(n, dtype=np.int32) % 2},
                 length_buckets=buckets)  # fmt: skip


def test_shuffle_is_deterministic_by_seed_and_epoch():
    split = _split()
    a, b, c = TrainStream(split, 8, seed=1), TrainStream(split, 8, seed=1), TrainStream(split, 8, 2)
    ids = lambda s, k: s.batch(k)["example_id"].tolist()  # noqa: E731
    assert [ids(a, k) for k in range(30)] == [ids(b, k) for k in range(30)]
    assert ids(a, 0) != ids(c, 0)
    # One process: the local batch is the global batch (8 examples).
    epoch = len(split) // 8
    first = np.concatenate([a.batch(k)["example_id"] for k in range(epoch)])
    second = np.concatenate([a.batch(k)["example_id"] for k in range(epoch, 2 * epoch)])
    assert len(set(first)) == len(first)  # no repeats within an epoch
    assert first.tolist() != second.tolist()  # a fresh permutation each epoch


def test_resumed_stream_continues_exactly():
    split = _split()
    run = TrainStream(split, 8, seed=3)
    uninterrupted = [run.batch(k) for k in range(40)]
    resumed = TrainStream(split, 8, seed=3).iterate(start=25)
    for k in range(25, 40):
        got = next(resumed)
        for key in got:
            np.testing.assert_array_equal(got[key], uninterrupted[k][key])


def test_processes_read_disjoint_shards():
    split = _split()
    streams = []
    for p in range(2):
        with mock.patch("jax.process_count", return_value=2), \
             mock.patch("jax.process_index", return_value=p):  # fmt: skip
            streams.append(TrainStream(split, 8, seed=0))
    for k in range(5):
        a, b = (s.batch(k)["example_id"] for s in streams)
        assert len(a) == len(b) == 4 and not set(a) & set(b)
        assert a.shape == b.shape


def test_buckets_bound_shapes_and_lose_nothing():
    split = _split(buckets=(4, 8))
    stream = TrainStream(split, 4, seed=0)
    widths = set()
    for k in range(60):
        batch = stream.batch(k)
        widths.add(batch["inputs"].shape[1])
        full = split.take(batch["example_id"])["inputs"]
        np.testing.assert_array_equal(full[:, : batch["inputs"].shape[1]], batch["inputs"])
        assert not full[:, batch["inputs"].shape[1] :].any()  # only padding was cut
    assert widths <= {4, 8, 16} and len(widths) > 1
    assert num_shapes(split) == 3


def test_length_grouping_keeps_epochs_whole_and_cuts_padding():
    split = _split(n=1003, width=48, buckets=(8, 16, 24, 32))
    ((_, lengths),) = example_lengths(split)
    grouped, random = TrainStream(split, 16, seed=5, group_batches=10), TrainStream(split, 16, 5)
    # 1003 is not a multiple of 16: the batches of epochs 1 and 2 are aligned to the stream.
    epochs = 3
    ids = np.concatenate([grouped.batch(k)["example_id"] for k in range(epochs * 1003 // 16)])
    for e in range(epochs - 1):  # the last epoch is incomplete
        assert sorted(ids[e * 1003 : (e + 1) * 1003]) == list(range(1003))
    widths = {name: [s.batch(k)["inputs"].shape[1] for k in range(200)]
              for name, s in (("grouped", grouped), ("random", random))}  # fmt: skip
    assert np.mean(widths["grouped"]) < 0.75 * np.mean(widths["random"])
    # Within a batch the lengths are close: the spread is a pool's, not the split's.
    spread = [np.ptp(lengths[grouped.batch(k)["example_id"]]) for k in range(1, 60)]
    assert np.median(spread) <= 8 < np.ptp(lengths)
    # Batches are shuffled across the epoch, not in length order.
    means = [lengths[grouped.batch(k)["example_id"]].mean() for k in range(1, 60)]
    assert not (np.all(np.diff(means) >= 0) or np.all(np.diff(means) <= 0))


def test_length_grouped_stream_resumes_and_shards_like_one_process():
    split = _split(n=1003, width=48, buckets=(8, 16, 32))
    one = TrainStream(split, 16, seed=2, group_batches=4)
    resumed = TrainStream(split, 16, seed=2, group_batches=4).iterate(start=70)
    for k in range(70, 75):
        np.testing.assert_array_equal(next(resumed)["inputs"], one.batch(k)["inputs"])
    parts = []
    for p in range(2):
        with mock.patch("jax.process_count", return_value=2), \
             mock.patch("jax.process_index", return_value=p):  # fmt: skip
            parts.append(TrainStream(split, 16, seed=2, group_batches=4).batch(70))
    assert parts[0]["inputs"].shape == parts[1]["inputs"].shape
    both = np.concatenate([b["example_id"] for b in parts])
    np.testing.assert_array_equal(both, one.batch(70)["example_id"])


def test_eval_sees_each_example_once():
    split = _split(n=103, buckets=(8,))
    seen, total_weight = [], 0.0
    shapes = set()
    for batch in eval_batches(split, 20):
        shapes.add(batch["label"].shape)
        valid = batch["weight"] > 0
        seen += batch["example_id"][valid].tolist()
        total_weight += batch["weight"].sum()
    assert sorted(seen) == list(range(103)) and total_weight == 103
    assert shapes == {(20,)}  # the last batch is padded, not shorter


def test_eval_max_examples():
    ids = [i for b in eval_batches(_split(), 20, max_examples=30)
           for i in b["example_id"][b["weight"] > 0]]  # fmt: skip
    assert ids == list(range(30))


def test_batch_larger_than_split_is_a_user_error():
    with pytest.raises(UserError, match="exceeds"):
        TrainStream(_split(n=3), 8, seed=0)


def test_lm_packing_covers_every_token_once():
    docs = [np.arange(4, 4 + n, dtype=np.int32) for n in (5, 9, 3)]
    arrays = encode.pack_lm(docs, 4, eos=2)
    stream = np.concatenate([np.append(d, 2) for d in docs])  # 20 tokens
    targets = arrays["targets"][arrays["target_weight"] > 0]
    np.testing.assert_array_equal(targets, stream[1:])
    np.testing.assert_array_equal(arrays["inputs"][1:, 0], arrays["targets"][:-1, -1])


def test_seq2seq_shift_and_truncation():
    arrays = encode.seq2seq([np.array([5, 6, 7])], [np.array([8, 9, 10, 11, 12])], 3, 4, 1, 2)
    assert arrays["encoder_inputs"].tolist() == [[5, 6, 2]]  # EOS kept on truncation
    assert arrays["targets"].tolist() == [[8, 9, 10, 2]]
    assert arrays["decoder_inputs"].tolist() == [[1, 8, 9, 10]]
    assert arrays["target_weight"].tolist() == [[1, 1, 1, 1]]
