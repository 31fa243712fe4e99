"""An adversarial set is evaluated with every suite; ``--suite advset`` evaluates it alone."""

import json
import shutil

import pytest

from llama_adv.cli import main

TSV = "sentence\tlabel\nthe movie was not good\t0\na very lovely film\t1\nbad\t0\n"


@pytest.fixture
def run(tiny_run, tmp_path):
    """A private copy of the tiny run (the shared one must stay free of robustness/)."""
    return shutil.copytree(tiny_run, tmp_path / "run")


@pytest.mark.parametrize(
    ("suite", "attacks"),
    [("advset", set()), ("noise", {"noise_swap@0.2"})],
)
def test_adv_set_is_evaluated_with_any_suite(run, tmp_path, suite, attacks):
    adv = tmp_path / "set.tsv"
    adv.write_text(TSV)
    args = ["robustness", "--workdir", str(run), "--suite", suite, "--adv-set", str(adv),
            "--config.robustness.noise=('swap',)",
            "--config.robustness.noise_rates=(0.2,)"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((run / "robustness" / "results.json").read_text())
    assert results["suite"] == suite
    (adv_set,) = results["adv_sets"].values()
    assert adv_set["num_examples"] == 3 and 0.0 <= adv_set["accuracy"] <= 1.0
    assert set(results.get("attacks", {})) == attacks
    assert "embedding" not in results
    assert "| adv_set:set.tsv |" in (run / "robustness" / "table.md").read_text()


def test_config_adv_set_alone(run, tmp_path):
    adv = tmp_path / "set.tsv"
    adv.write_text(TSV)
    args = ["robustness", "--workdir", str(run), f"--config.robustness.adv_set={adv}",
            "--config.robustness.suite=advset"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((run / "robustness" / "results.json").read_text())
    assert list(results["adv_sets"]) == ["adv_set:set.tsv"]
    assert "embedding" not in results and "attacks" not in results
