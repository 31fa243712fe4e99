"""Config layer: locked defaults, overrides, variants, config.json round trip, errors."""

import json

import pytest

from llama_adv.config import apply_overrides, get_default_config, load_config, to_json
from llama_adv.config.defaults import SECTIONS
from llama_adv.errors import UserError


def test_every_section_has_defaults():
    config = get_default_config()
    assert set(config.keys()) == set(SECTIONS)
    assert set(SECTIONS) >= {"model", "task", "data", "adv", "optim", "train", "eval",
                             "checkpoint", "robustness"}  # fmt: skip


def test_override_sets_typed_value():
    config = apply_overrides(get_default_config(), ["adv.epsilon=0.3", "train.num_steps=7"])
    assert config.adv.epsilon == 0.3
    assert config.train.num_steps == 7 and isinstance(config.train.num_steps, int)


def test_misspelled_key_names_the_closest_keys():
    with pytest.raises(UserError, match=r"adv\.epsilonn.*adv\.epsilon"):
        apply_overrides(get_default_config(), ["adv.epsilonn=0.3"])


def test_misspelled_section_is_an_error():
    with pytest.raises(UserError, match="Unknown config key"):
        apply_overrides(get_default_config(), ["advv.epsilon=0.3"])


def test_wrong_type_is_an_error():
    with pytest.raises(UserError, match="expects float"):
        apply_overrides(get_default_config(), ["adv.epsilon=large"])


def test_locked_config_rejects_new_attribute():
    config = get_default_config()
    with pytest.raises(AttributeError):
        config.adv.not_a_field = 1


def test_config_file_variant_and_docstring(repo):
    config = load_config(f"{repo}/configs/quickstart.py:method=fgm,steps=12")
    assert config.adv.method == "fgm" and config.train.num_steps == 12
    import importlib.util

    spec = importlib.util.spec_from_file_location("qs", repo / "configs" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "llama-adv train --config configs/quickstart.py" in module.__doc__


def test_unknown_variant_is_an_error(repo):
    with pytest.raises(UserError, match=r"Unknown config variant 'metod'.*method"):
        load_config(f"{repo}/configs/quickstart.py:metod=fgm")


def test_every_config_file_loads(repo):
    for path in sorted((repo / "configs").glob("*.py")):
        config = load_config(str(path))
        assert config.train.num_steps > 0, path


def test_json_round_trip_reproduces_config(repo, tmp_path):
    config = load_config(f"{repo}/configs/quickstart.py:method=fgm", ["adv.epsilon=0.7"])
    path = tmp_path / "config.json"
    path.write_text(to_json(config))
    again = load_config(str(path))
    assert json.loads(to_json(again)) == json.loads(to_json(config))


def test_json_with_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "config.json"
    values = json.loads(to_json(get_default_config()))
    values["adv"]["epsilom"] = 1.0
    path.write_text(json.dumps(values))
    with pytest.raises(UserError, match=r"adv\.epsilom"):
        load_config(str(path))


def test_missing_config_file_is_an_error():
    with pytest.raises(UserError, match="does not exist"):
        load_config("configs/nope.py")
