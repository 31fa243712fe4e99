import numpy as np

from llama_adv.robustness.charlevel import EDITS, edit_word, levenshtein
from llama_adv.robustness.noise import noisy_texts, word_noise


def test_levenshtein():
    assert levenshtein("good", "good") == 0
    assert levenshtein("good", "goood") == 1
    assert levenshtein("good", "godo") == 2  # a swap is two unit edits
    assert levenshtein("", "abc") == 3


def test_each_edit_changes_the_word_by_its_cost():
    rng = np.random.default_rng(0)
    for kind in EDITS:
        new = edit_word("terrible", kind, rng)
        assert new != "terrible"
        assert levenshtein("terrible", new) == (2 if kind == "swap" else 1)
    assert edit_word("a", "delete", rng) is None  # never deletes a whole word


def test_noise_rates_and_determinism():
    text = "the plot was not very good and the acting was bad"
    rng = np.random.default_rng(0)
    assert word_noise(text, "delete", 0.0, rng) == (text, 0)
    dup, touched = word_noise(text, "duplicate", 1.0, rng)
    assert touched == len(text.split()) and len(dup.split()) == 2 * len(text.split())
    kept, _ = word_noise(text, "delete", 1.0, rng)
    assert len(kept.split()) == 1  # at least one word survives
    swapped, _ = word_noise(text, "swap", 1.0, rng)
    assert sorted(swapped.split()) == sorted(text.split())
    first, second = noisy_texts([text] * 3, "swap", 0.3, 7), noisy_texts([text] * 3, "swap", 0.3, 7)
    assert first[0] == second[0] and np.array_equal(first[1], second[1])
