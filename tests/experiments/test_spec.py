"""Experiment files: loading, validation errors, expansion into runs with stable ids."""

import pytest
from _sweep_helpers import QUICKSTART, REPO

from llama_adv.cli import main
from llama_adv.config.loading import parse_value
from llama_adv.errors import UserError
from llama_adv.experiments.spec import expand, format_override, load_experiment

GRID = f"""
def get_experiment(arg=None):
    return Experiment(
        config="{QUICKSTART}:tiny",
        overrides=("train.num_steps=3",),
        axes=(
            axis("adv.method", ["none", "fgm"], name="method"),
            zip_axis("radius", {{"adv.epsilon": [0.1, 0.3], "adv.steps": [1, 2]}}),
        ),
        seeds=(0,) if arg == "small" else (0, 1),
        table=Table(rows=("method",), columns=("radius",)),
    )
"""


def test_expansion_product_zip_seeds_and_stable_ids(write_experiment):
    path = write_experiment(GRID)
    runs = expand(load_experiment(path))
    assert len(runs) == 2 * 2 * 2
    assert [r.seed for r in runs] == [0] * 4 + [1] * 4  # seeds vary slowest
    first = runs[0]
    assert first.id == "method=none,radius=0.1-1,seed=0"
    assert first.overrides == (
        "train.num_steps=3", "adv.method=none", "adv.epsilon=0.1", "adv.steps=1", "train.seed=0"
    )  # fmt: skip
    assert runs[3].levels == {"method": "fgm", "radius": "0.3/2"}
    assert len({r.id for r in runs}) == len(runs)
    # Loading again gives the same ids: a re-run finds its workdirs.
    assert [r.id for r in expand(load_experiment(path))] == [r.id for r in runs]
    assert load_experiment(path).name == "exp"
    assert load_experiment(f"{path}:small").name == "exp-small"


def test_named_axis_replaces_the_config_file(write_experiment, monkeypatch):
    monkeypatch.chdir(REPO)
    path = write_experiment("""
        def get_experiment(arg=None):
            return Experiment(
                config="configs/sst2_decoder.py:tiny",
                axes=(named_axis("arch", {
                    "decoder": {},
                    "encdec": {"config": "configs/sst2_encdec.py:tiny", "adv.epsilon": 0.5},
                }),),
                table=Table(rows=("arch",)),
            )
    """)
    decoder, encdec = expand(load_experiment(path))
    assert decoder.config == f"{REPO / 'configs' / 'sst2_decoder.py'}:tiny"
    assert encdec.config == f"{REPO / 'configs' / 'sst2_encdec.py'}:tiny"
    assert "adv.epsilon=0.5" in encdec.overrides and decoder.id == "arch=decoder,seed=0"


@pytest.mark.parametrize("value", ["fgm", "none", "1", "True", "a b", 0.1, 3, True, (32, 64)])
def test_override_text_parses_back_to_the_value(value):
    _, text = format_override("k", value).split("=", 1)
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('axes=(axis("adv.epsilom", [1.0]),)', r"axis 'adv.epsilom': 'adv.epsilom' is not a "
                                               r"config key\. Closest valid keys: adv\.epsilon"),
        ('axes=(axis("adv.method", ["none"], name="method"), axis("adv.epsilon", [1.0]))',
         "every axis must be in exactly one of table"),
        ('overrides=("train.num_stepz=3",)', "'train.num_stepz' is not a config key"),
        ('plots=(Plot("p", "bar", "method", ("acc",)),)', "names metric 'acc'"),
        ('plots=(Plot("p", "pie", "method", ("accuracy",)),)', "kind must be line, bar or scatter"),
        ('seeds=(0, 0)', "seeds must be a non-empty list of distinct"),
        ('metrics=(Metric("t", "step_time_sec", relative_to={"method": "clean"}),)',
         "relative to method='clean', which is not a level"),
    ],
)  # fmt: skip
def test_invalid_experiments_are_one_clear_error(write_experiment, change, message):
    path = write_experiment(f"""
        def get_experiment(arg=None):
            kwargs = dict(
                config="{QUICKSTART}",
                axes=(axis("adv.method", ["none", "fgm"], name="method"),),
                table=Table(rows=("method",)),
            )
            kwargs.update(dict({change}))
            return Experiment(**kwargs)
    """)
    with pytest.raises(UserError, match=message) as info:
        load_experiment(path)
    assert str(info.value).startswith(path)  # names the file


def test_missing_file_and_missing_function(write_experiment, tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.py"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"llama-adv: error: Experiment file {tmp_path / 'nope.py'} does not exist."
    path = write_experiment("X = 1\n", name="empty")
    with pytest.raises(UserError, match="does not define get_experiment"):
        load_experiment(path)
    path = write_experiment(
        f'def get_experiment(arg=None):\n    return Experiment(config="{QUICKSTART}", '
        'axes=(axis("adv.method", ["a-b", "a/b"]),), table=Table(rows=("adv.method",)))\n',
        name="dup",
    )
    with pytest.raises(UserError, match="two runs get the id"):
        expand(load_experiment(path))
