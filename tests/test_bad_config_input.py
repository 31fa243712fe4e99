"""Bad config input: one line on stderr naming the field or file, exit status 2, and
nothing written to the workdir (each case once gave a traceback, a hang or a silent
misreading)."""

import json

import pytest

from llama_adv.cli import main
from llama_adv.config import get_default_config, load_config, parse_variant, to_json
from llama_adv.config.validate import reported_metrics, validate_config
from llama_adv.errors import UserError

QUICK = "configs/quickstart.py:tiny"

# (case, override or config argument, text the message must contain)
OVERRIDES = [
    ("negative batch", "train.batch_size=-4", "train.batch_size"),
    ("zero log interval", "train.log_every=0", "train.log_every"),
    ("negative steps", "train.num_steps=-5", "train.num_steps"),
    ("unknown eval attack", "eval.attack.method=cw", "eval.attack.method"),
    ("unknown eval norm", "eval.attack.norm=l3", "eval.attack.norm"),
    ("zero eval batch", "eval.batch_size=0", "eval.batch_size"),
    ("negative learning rate", "optim.learning_rate=-0.01", "optim.learning_rate"),
    ("unknown optimizer", "optim.name=adamx", "optim.name"),
    ("unknown schedule", "optim.schedule=step", "optim.schedule"),
    ("unreported best metric", "checkpoint.best_metric=acc", "checkpoint.best_metric"),
    ("unknown tokenizer", "data.tokenizer=wordpiece", "data.tokenizer"),
    ("tokenizer a synthetic task ignores", "data.tokenizer=sentencepiece", "data.tokenizer"),
    ("buckets that are not numbers", "data.length_buckets=abc", "data.length_buckets"),
    ("buckets a synthetic task ignores", "data.length_buckets=(8,16)", "data.length_buckets"),
    ("length grouping without buckets", "data.group_by_length=50", "data.group_by_length"),
    ("zero length (hung in the generator)", "data.max_length=0", "data.max_length"),
    ("dropout of one", "model.dropout_rate=1.0", "model.dropout_rate"),
    ("kv heads not dividing heads", "model.num_kv_heads=3", "model.num_kv_heads"),
]


def _run(argv, capsys):
    status = main(argv)
    err = capsys.readouterr().err.strip()
    return status, err


@pytest.mark.parametrize("case,override,field", OVERRIDES, ids=[c[0] for c in OVERRIDES])
def test_bad_override_is_one_line_and_writes_nothing(case, override, field, repo, tmp_path,
                                                     capsys, monkeypatch):  # fmt: skip
    monkeypatch.chdir(repo)
    workdir = tmp_path / "run"
    status, err = _run(["train", "--config", QUICK, "--workdir", str(workdir),
                        f"--config.{override}"], capsys)  # fmt: skip
    assert status == 2
    assert len(err.splitlines()) == 1 and field in err, err
    assert not workdir.exists()


CONFIG_FILES = {
    "syntax error": ("def get_config(:\n    pass\n", "line 1"),
    "unknown key assigned": (
        "from llama_adv.config import get_default_config\n\n"
        "def get_config(arg=None):\n    c = get_default_config()\n    c.train.foo = 3\n"
        "    return c\n",
        "'foo'",
    ),
    "exception inside get_config": (
        "def get_config(arg=None):\n    return 1 / 0\n",
        "ZeroDivisionError",
    ),
    "no get_config": ("X = 1\n", "get_config"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_broken_config_file_is_one_line_naming_the_file(case, tmp_path, capsys):
    text, expected = CONFIG_FILES[case]
    path = tmp_path / "broken.py"
    path.write_text(text)
    workdir = tmp_path / "run"
    status, err = _run(["train", "--config", str(path), "--workdir", str(workdir)], capsys)
    assert status == 2
    assert len(err.splitlines()) == 1 and str(path) in err and expected in err, err
    assert not workdir.exists()


def test_variant_of_the_wrong_type_names_the_variant(repo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repo)
    status, err = _run(["train", "--config", "configs/quickstart.py:steps=abc",
                        "--workdir", str(tmp_path / "run")], capsys)  # fmt: skip
    assert status == 2 and len(err.splitlines()) == 1
    assert "steps='abc'" in err and "int" in err
    assert not (tmp_path / "run").exists()


def test_variant_values_take_the_type_of_their_default():
    values = parse_variant("steps=10,epsilon=1,name=x", steps=5, epsilon=0.5, name="a")
    assert values == {"steps": 10, "epsilon": 1.0, "name": "x"}
    assert isinstance(values["epsilon"], float)
    with pytest.raises(UserError, match="epsilon='big'"):
        parse_variant("epsilon=big", epsilon=0.5)


def test_config_directory_points_at_its_config_json(tmp_path, capsys):
    (tmp_path / "config.json").write_text(to_json(get_default_config()))
    status, err = _run(["train", "--config", str(tmp_path), "--workdir", str(tmp_path / "w")],
                       capsys)  # fmt: skip
    assert status == 2 and "is a directory" in err and "config.json" in err


def test_config_json_missing_a_section_is_an_error(tmp_path):
    values = json.loads(to_json(get_default_config()))
    del values["optim"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    with pytest.raises(UserError, match="no optim section"):
        load_config(str(path))


def test_config_json_missing_a_field_uses_its_default_and_says_so(tmp_path, capsys):
    values = json.loads(to_json(get_default_config()))
    del values["adv"]["begin_step"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    assert load_config(str(path)).adv.begin_step == get_default_config().adv.begin_step
    assert "adv.begin_step" in capsys.readouterr().err


def test_truncated_config_json_is_an_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(to_json(get_default_config())[:200])
    with pytest.raises(UserError, match="not valid JSON"):
        load_config(str(path))


def test_every_shipped_config_validates(repo):
    for path in sorted((repo / "configs").glob("*.py")):
        for variant in ("", ":tiny"):
            validate_config(load_config(f"{path}{variant}"))


def test_best_metric_follows_what_the_task_reports():
    config = get_default_config()
    assert "perplexity" not in reported_metrics(config)
    with config.unlocked():
        config.task.name = "seq2seq"
        config.eval.attack.method = "none"
    assert {"perplexity", "bleu"} <= set(reported_metrics(config))
    assert "attack_loss" not in reported_metrics(config)
