"""The shipped experiment files: every run resolves, without data or training."""

import pytest
from _sweep_helpers import REPO

from llama_adv.experiments.runner import INVALID, NEW, plan_run
from llama_adv.experiments.spec import expand, load_experiment

SHIPPED = {"sst2_methods.py": 39, "freelb_ablation.py": 27, "miyato_imdb.py": 10,
           "arch_compare.py": 12, "sst2_pretrained.py": 27,
           "miyato_imdb_pretrained.py": 10}  # fmt: skip


def test_every_experiment_file_is_tested():
    files = {p.name for p in (REPO / "experiments").glob("*.py") if not p.name.startswith("_")}
    assert files == set(SHIPPED)


@pytest.mark.parametrize(("name", "count"), SHIPPED.items())
def test_shipped_experiments_resolve_every_run(name, count, monkeypatch, tmp_path):
    """Every run of every shipped experiment loads its config with its overrides (keys and
    types checked) and builds its adversarial method, without data or training."""
    from llama_adv.adversarial import build_method, validate_adv_config
    from llama_adv.config import load_config
    from llama_adv.tasks import build_task

    monkeypatch.chdir(REPO)
    exp = load_experiment(f"experiments/{name}")
    assert exp.scaled_down and exp.budget, "state what was scaled down and the expected time"
    runs = expand(exp)
    assert len(runs) == count
    states = {r.id: plan_run(r, tmp_path / r.id) for r in runs}
    assert not {i: p.error for i, p in states.items() if p.state == INVALID}
    assert {p.state for p in states.values()} == {NEW}
    for run in runs:
        config = load_config(run.config, run.overrides)
        streams = ("encoder",) if config.model.name == "encoder_decoder" else ("inputs",)
        validate_adv_config(config.adv, streams)
        build_method(config.adv, build_task(config.task.name), config.train.num_steps)
