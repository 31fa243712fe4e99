"""Loading configs from ``configs/*.py[:arg]`` or a run's ``config.json``, and overrides."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import sys
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ml_collections as mlc

from llama_adv.config.defaults import get_default_config
from llama_adv.errors import UserError


def all_keys(config: mlc.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf of ``config`` (``["adv.epsilon", ...]``)."""
    keys = []
    for name, value in config.items():
        path = f"{prefix}{name}"
        if isinstance(value, mlc.ConfigDict):
            keys.extend(all_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def _unknown_key(config: mlc.ConfigDict, path: str) -> UserError:
    keys = all_keys(config)
    close = difflib.get_close_matches(path, keys, n=3, cutoff=0.6)
    if not close:  # a typo in the last part: compare within the same section
        section = path.rsplit(".", 1)[0]
        close = [k for k in keys if k.startswith(section + ".")][:8]
    hint = f" Closest valid keys: {', '.join(close)}." if close else ""
    return UserError(f"Unknown config key {path!r}.{hint}")


def _coerce(current: Any, value: Any, path: str) -> Any:
    """Converts ``value`` to the type of the field it replaces, or raises UserError."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(current, str):
        return str(value)
    elif isinstance(current, (tuple, list)):
        if isinstance(value, (tuple, list)):
            return tuple(value)
        if isinstance(value, (int, float, str)):
            return (value,)
    elif current is None:
        return value
    raise UserError(
        f"Config key {path!r} expects {type(current).__name__} (currently {current!r}), "
        f"got {value!r}."
    )


def set_value(config: mlc.ConfigDict, path: str, value: Any) -> None:
    """Sets the leaf at dotted ``path``; unknown keys and wrong types raise UserError."""
    *parents, leaf = path.split(".")
    node = config
    for i, part in enumerate(parents):
        if not isinstance(node, mlc.ConfigDict) or part not in node:
            raise _unknown_key(config, ".".join(parents[: i + 1]) + "." + leaf)
        node = node[part]
    if not isinstance(node, mlc.ConfigDict) or leaf not in node:
        raise _unknown_key(config, path)
    if isinstance(node[leaf], mlc.ConfigDict):
        if not isinstance(value, Mapping):
            raise UserError(f"Config key {path!r} is a section; set its fields instead.")
        for key, sub in value.items():
            set_value(config, f"{path}.{key}", sub)
        return
    with node.unlocked():
        node[leaf] = _coerce(node[leaf], value, path)


def parse_value(text: str) -> Any:
    """Parses an override's right-hand side: a Python literal, else the raw string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: mlc.ConfigDict, overrides: Iterable[str]) -> mlc.ConfigDict:
    """Applies ``["adv.epsilon=0.3", ...]`` (also accepting a leading ``config.``)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"Override {item!r} must look like section.key=value.")
        path, text = item.split("=", 1)
        path = path.strip().removeprefix("--").removeprefix("config.")
        set_value(config, path, parse_value(text))
    return config


def update_from_dict(config: mlc.ConfigDict, values: Mapping[str, Any], prefix: str = "") -> None:
    """Recursively writes ``values`` into ``config``; unknown keys raise UserError."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            node = config
            for part in path.split("."):
                if part not in node:
                    raise _unknown_key(config, path)
                node = node[part]
            if isinstance(node, mlc.ConfigDict):
                update_from_dict(config, value, path + ".")
                continue
        set_value(config, path, value)


def _config_file_error(path: Path, error: BaseException) -> UserError:
    """One line for an exception raised while running a config file: where and what."""
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    if line is None:
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if Path(f.filename).resolve() == path.resolve()]  # fmt: skip
        line = frames[-1].lineno if frames else None
    where = f"{path}, line {line}" if line else str(path)
    message = str(error).strip().strip("'\"").splitlines()[0] if str(error).strip() else ""
    if isinstance(error, AttributeError) and "config is locked" in message:
        # ml_collections lists every field of the section; the key is what matters.
        key = message.split('"')[1] if '"' in message else message
        return UserError(
            f"{where}: get_config assigns {key!r}, which is not a config key. The keys of "
            "each section are in llama_adv/config/defaults.py."
        )
    if isinstance(error, SyntaxError):
        message = error.msg
    return UserError(f"{where}: {type(error).__name__}: {message}")


def _load_python(path: Path, arg: str | None) -> mlc.ConfigDict:
    spec = importlib.util.spec_from_file_location(f"llama_adv_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise UserError(f"Config file {path} does not define get_config(arg=None).")
        config = module.get_config(arg) if arg is not None else module.get_config()
    except UserError:
        raise
    except Exception as error:  # the user's file: its mistake in one line, not a traceback
        raise _config_file_error(path, error) from None
    if not isinstance(config, mlc.ConfigDict):
        raise UserError(f"{path}: get_config must return an ml_collections.ConfigDict.")
    config.lock()
    return config


LATER_SECTIONS = ("mesh",)
# Config entries added after runs were made whose defaults do what the code did before
# they existed: a run's config.json without them is the same run as one with defaults.
NEUTRAL_ADDITIONS = ("mesh", "model.lora", "eval.attack.radius_unit", "robustness.radius_unit",
                     "data.objective", "data.extra_ids", "data.noise_density",
                     "data.mean_noise_span_length")  # fmt: skip


def same_run_config(old: Mapping, new: Mapping) -> bool:
    """Whether a run's stored ``config.json`` data ``old`` describes the resolved config
    ``new`` (JSON data): equal, once the :data:`NEUTRAL_ADDITIONS` that ``old`` predates
    and ``new`` holds at their defaults are set aside."""
    defaults = json.loads(to_json(get_default_config()))
    new = json.loads(json.dumps(new))
    for dotted in NEUTRAL_ADDITIONS:
        *parents, leaf = dotted.split(".")
        old_node, new_node, default = old, new, defaults
        for part in parents:
            old_node = old_node.get(part, {}) if isinstance(old_node, Mapping) else {}
            new_node, default = new_node.get(part, {}), default.get(part, {})
        if leaf not in old_node and new_node.get(leaf) == default.get(leaf):
            new_node.pop(leaf, None)
    return old == new


def _load_json(path: Path) -> mlc.ConfigDict:
    """A run's ``config.json``: every section must be there; missing fields (added to the
    defaults after the run was made) take their defaults, with a note on stderr."""
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path} is not valid JSON ({error}); it may be truncated. Replay the run from "
            "its config file instead."
        ) from None
    config = get_default_config()
    if not isinstance(values, Mapping):
        raise UserError(f"{path} must hold a JSON object of config sections.")
    # Sections added after runs were made (their fields take the defaults, noted below).
    missing = [name for name in config if name not in values and name not in LATER_SECTIONS]
    if missing:
        raise UserError(
            f"{path} has no {', '.join(missing)} section{'s' if len(missing) > 1 else ''}; a "
            "run's config.json holds every section. Restore it, or use the config file."
        )
    update_from_dict(config, values)
    defaults = [k for k in all_keys(config) if not _has_path(values, k)]
    if defaults:
        print(f"config: {path} has no {', '.join(defaults)}; using the defaults.",
              file=sys.stderr)  # fmt: skip
    return config


def _has_path(values: Mapping, dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def load_config(spec: str, overrides: Iterable[str] = ()) -> mlc.ConfigDict:
    """Loads ``path.py[:arg]`` or ``path.json`` and applies ``overrides``.

    Args:
      spec: a Python config file with ``get_config(arg=None)``, optionally followed by
        ``:variant`` passed as ``arg``; or a ``config.json`` written by a previous run.
      overrides: ``"section.key=value"`` strings.

    Returns:
      The locked, resolved config.
    """
    path_text, _, arg = spec.partition(":")
    path = Path(path_text)
    if path.is_dir():
        has_json = (path / "config.json").is_file()
        inside = " (it holds a run's config.json: pass that)" if has_json else ""
        raise UserError(
            f"--config {path} is a directory{inside}; pass a configs/<name>.py[:variant] file "
            "or a run's config.json."
        )
    if not path.is_file():
        raise UserError(f"Config file {path} does not exist.")
    if path.suffix == ".json":
        if arg:
            raise UserError(f"{path}: a JSON config takes no ':variant'.")
        config = _load_json(path)
    elif path.suffix == ".py":
        config = _load_python(path, arg or None)
    else:
        raise UserError(f"Config {path} must be a .py file with get_config or a config.json.")
    return apply_overrides(config, overrides)


def parse_variant(arg: str | None, **defaults: Any) -> dict[str, Any]:
    """Parses a config-file variant string ``"method=fgm,steps=10"`` into a dict.

    Keys must be among ``defaults``; values are converted like command-line overrides, to
    the type of the key's default (an int default takes ints, a float default numbers).
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, text = item.partition("=")
        if key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(
                f"Unknown config variant {key!r}.{hint} Valid: {', '.join(sorted(defaults))}."
            )
        value = parse_value(text) if sep else True
        default = defaults[key]
        if default is not None and not isinstance(default, str):
            try:
                value = _coerce(default, value, key)
            except UserError:
                kind = type(default).__name__
                if not sep:
                    raise UserError(
                        f"Config variant {key!r} needs a value: {key}=<{kind}> (default "
                        f"{key}={default!r})."
                    ) from None
                raise UserError(
                    f"Config variant {key}={text!r} must be {kind}, like its default "
                    f"{key}={default!r}."
                ) from None
        values[key] = value
    return values


def to_json(config: mlc.ConfigDict) -> str:
    """The resolved config as indented, key-sorted JSON (what ``config.json`` holds)."""
    return json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True)
