import numpy as np

from llama_adv.robustness.metrics import Outcomes, summarize


def test_success_rate_and_accuracy_follow_textattack_counts():
    clean = np.array([1, 1, 1, 1, 0, 0], bool)
    adv = np.array([0, 0, 1, 1, 1, 0], bool)  # a wrong-before example "right after" is skipped
    s = summarize(Outcomes(clean, adv, np.array([0.1, 0.3, 0.2, 0.2, 0.9, 0.9]), np.full(6, 5)))
    assert (s["successful"], s["failed"], s["skipped"]) == (2, 2, 2)
    assert s["attack_success_rate"] == s["successful"] / (s["successful"] + s["failed"])
    assert s["clean_accuracy"] == 4 / 6
    assert s["accuracy_under_attack"] == 2 / 6 <= s["clean_accuracy"]
    assert np.isclose(s["avg_perturbed_percent"], 20.0)  # over attacked examples only


def test_nothing_to_attack_gives_zero_rate():
    s = summarize(Outcomes(np.zeros(3, bool), np.ones(3, bool), np.zeros(3), np.ones(3)))
    assert s["skipped"] == 3 and s["attack_success_rate"] == 0.0
    assert s["accuracy_under_attack"] == 0.0
