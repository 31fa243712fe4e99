"""TextCodec reproduces a dataset's encoding, truncation included (no model needed)."""

import numpy as np
import pytest

from llama_adv.data import encode
from llama_adv.data.base import Split
from llama_adv.data.tokenizers import EOS, ByteTokenizer, WordTokenizer, pad_to
from llama_adv.errors import UserError
from llama_adv.robustness.classifier import TextCodec

TEXTS = ["good", "a very long and lovely film", "bad", "not so bad after all", "ok"]


def byte_split(texts: list[str], length: int) -> Split:
    tok = ByteTokenizer()
    return Split(encode.classification(tok.encode_batch(texts), np.zeros(len(texts)), length, EOS),
                 texts)  # fmt: skip


@pytest.mark.parametrize(
    "texts",
    [TEXTS, TEXTS[1:], [TEXTS[1], TEXTS[3]]],
    ids=["first-fits", "first-truncated", "all-truncated"],
)
def test_reencodes_truncated_examples_like_the_dataset(texts):
    split = byte_split(texts, 8)
    assert any(len(t) > 7 for t in texts)  # some examples are cut to 7 bytes + EOS
    codec = TextCodec(ByteTokenizer(), split)
    assert codec.suffix == [EOS]
    assert np.array_equal(codec.encode(texts), split.arrays["inputs"])
    # A text an attack made longer is cut the same way: EOS stays last.
    (row,) = codec.encode(["x" * 50])
    assert row[-1] == EOS and np.all(row[:-1] == ByteTokenizer().encode("x")[0])


def test_reencodes_a_synthetic_split_without_truncation():
    tok = WordTokenizer(["good", "bad", "not"])
    texts = ["good", "not bad", "bad"]
    split = Split({"inputs": np.stack([pad_to(tok.encode(t) + [EOS], 6) for t in texts])}, texts)
    codec = TextCodec(tok, split)
    assert np.array_equal(codec.encode(texts), split.arrays["inputs"])


def test_an_encoding_it_cannot_reproduce_names_the_example():
    split = byte_split(TEXTS, 8)
    split.arrays["inputs"][2, 0] += 1  # the text of example 2 no longer gives its tokens
    with pytest.raises(UserError, match=r"^Example 2's text does not re-encode"):
        TextCodec(ByteTokenizer(), split)
