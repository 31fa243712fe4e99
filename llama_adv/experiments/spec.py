"""Experiment files: what runs a sweep makes and how its table and plots look.

An experiment file ``experiments/<name>.py`` defines ``get_experiment(arg=None)``
returning an :class:`Experiment` (``arg`` is the text after ``:`` in
``experiments/<name>.py:arg``, as for config files). :func:`load_experiment` loads and
validates it; :func:`expand` turns it into one :class:`RunSpec` per combination of axis
levels and seed, each with a stable id derived from its overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_adv.errors import UserError

# The pseudo-key of a level that replaces the base config file (``configs/x.py[:variant]``)
# instead of overriding one field.
CONFIG_KEY = "config"
# Characters kept in run ids as they are; everything else becomes "-" (ids are folder names).
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclasses.dataclass(frozen=True)
class Level:
    """One value of an axis: a label (table rows, run ids) and the config settings it makes.

    ``settings`` maps dotted config keys (``"adv.epsilon"``) to values, and optionally
    ``"config"`` to a config spec that replaces the experiment's base config.
    """

    label: str
    settings: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Axis:
    """A named list of levels. Axes of an experiment combine as a product; the keys set
    together within a level are varied together (a zip)."""

    name: str
    levels: tuple[Level, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(level.label for level in self.levels)


def axis(key: str, values: Sequence[Any], *, name: str = "") -> Axis:
    """An axis over one config key: ``axis("adv.epsilon", [0.1, 0.3])``.

    Levels are labelled ``str(value)``; the axis is named ``name`` or ``key``.
    """
    return Axis(name or key, tuple(Level(_label(v), {key: v}) for v in values))


def zip_axis(name: str, values: Mapping[str, Sequence[Any]]) -> Axis:
    """An axis varying several keys together: ``zip_axis("lr", {"optim.learning_rate":
    [1e-3, 3e-4], "optim.warmup_steps": [100, 300]})``; the i-th level sets the i-th value
    of every key and is labelled by those values joined with ``/``."""
    lengths = {len(v) for v in values.values()}
    if len(lengths) != 1:
        raise UserError(f"zip_axis {name!r}: every key needs the same number of values.")
    keys = list(values)
    return Axis(
        name,
        tuple(
            Level("/".join(_label(values[k][i]) for k in keys), {k: values[k][i] for k in keys})
            for i in range(lengths.pop())
        ),
    )


def named_axis(name: str, levels: Mapping[str, Mapping[str, Any]]) -> Axis:
    """An axis of labelled levels: ``named_axis("arch", {"decoder": {"config":
    "configs/sst2_decoder.py"}, "enc-dec": {"config": "configs/sst2_encdec.py"}})``."""
    return Axis(name, tuple(Level(label, dict(s)) for label, s in levels.items()))


def _label(value: Any) -> str:
    return str(value) if not isinstance(value, str) else value


@dataclasses.dataclass(frozen=True)
class Metric:
    """One number per run, read from its ``summary.json``.

    Attributes:
      name: how tables and plots refer to it.
      key: dotted path into ``summary.json`` (``"eval.accuracy"``, ``"step_time_sec"``).
      label: column header (default ``name``).
      scale, offset: the reported value is ``offset + scale * raw`` (``scale=100`` gives
        percent; ``scale=-100, offset=100`` turns an accuracy into an error rate in %).
      best: ``"max"`` or ``"min"``: which row mean is set in bold; ``""`` bolds nothing.
      digits: decimals printed.
      relative_to: ``{axis name: level label}``: divide the raw value by that of the run
        with this level (same seed, every other axis equal) before scaling, e.g. a step-time
        ratio to clean training.
    """

    name: str
    key: str
    label: str = ""
    scale: float = 1.0
    offset: float = 0.0
    best: str = "max"
    digits: int = 1
    relative_to: Mapping[str, str] | None = None

    @property
    def header(self) -> str:
        return self.label or self.name


@dataclasses.dataclass(frozen=True)
class Reference:
    """Published numbers printed in their own column beside ours.

    ``values`` maps row labels to numbers comparable with metric ``metric`` (same units);
    rows it does not name show "-".
    """

    label: str
    metric: str
    values: Mapping[str, float]
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Table:
    """The table layout.

    Attributes:
      rows: axis names whose level labels (joined by `` / ``) name the rows.
      columns: axis names whose levels split every metric into column groups.
      metrics: metric names shown, in order (default: every metric of the experiment).
      references: published numbers, one extra column each.
      missing_rows: row label -> why this experiment has no run for it; the row is printed
        with "-" in our columns and the reason as a note (a row the paper has and we cannot
        make honestly).
      notes: lines printed under the table.
    """

    rows: tuple[str, ...]
    columns: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    references: tuple[Reference, ...] = ()
    missing_rows: Mapping[str, str] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Plot:
    """A PNG written beside the table (mean over seeds, error bars = std).

    Attributes:
      name: file stem (``<name>.png``).
      kind: ``"line"`` (``x`` an axis; one line per metric and per combination of the other
        axes), ``"bar"`` (``x`` an axis; bars grouped by its levels) or ``"scatter"``
        (``x`` a metric; one labelled point per table cell group).
      x: an axis name (line, bar) or a metric name (scatter).
      y: metric names.
      title: plot title (default: the experiment's title).
    """

    name: str
    kind: str
    x: str
    y: tuple[str, ...]
    title: str = ""


def accuracy_metrics() -> tuple[Metric, ...]:
    """Clean accuracy and accuracy under the evaluation attack (``eval.attack``), in %."""
    return (
        Metric("accuracy", "eval.accuracy", "accuracy (%)", scale=100.0),
        Metric("attack_accuracy", "eval.attack_accuracy", "under attack (%)", scale=100.0),
    )


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a sweep and its report need.

    Attributes:
      config: base config spec ``configs/x.py[:variant]``; relative paths are looked up
        from the current directory, then from the repository holding the experiment file.
      overrides: ``"section.key=value"`` applied to every run before the axes' settings
        (what was scaled down goes here).
      axes: combined as a product; see :func:`axis`, :func:`zip_axis`, :func:`named_axis`.
      seeds: values of ``seed_key``, one run per seed and axis combination.
      metrics: numbers collected from every run's ``summary.json``.
      table: the layout of ``table.md``/``.csv``/``.tex``.
      plots: PNGs written with the table.
      title: first line of the table header.
      scaled_down: what differs from the published setting to fit the compute budget;
        printed in the table header.
      budget: expected wall time and hardware, printed in the header.
      seed_key: the config key the seeds set.
      name: the experiment's name (``runs/<name>``, ``results/<name>``); set by the loader.
      path: the file it came from; set by the loader.
    """

    config: str
    table: Table
    axes: tuple[Axis, ...] = ()
    seeds: tuple[int, ...] = (0,)
    overrides: tuple[str, ...] = ()
    metrics: tuple[Metric, ...] = dataclasses.field(default_factory=accuracy_metrics)
    plots: tuple[Plot, ...] = ()
    title: str = ""
    scaled_down: str = ""
    budget: str = ""
    seed_key: str = "train.seed"
    name: str = ""
    path: str = ""

    def axis(self, name: str) -> Axis:
        return next(a for a in self.axes if a.name == name)

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    @property
    def table_metrics(self) -> tuple[Metric, ...]:
        return tuple(self.metric(n) for n in self.table.metrics) or self.metrics


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a sweep.

    Attributes:
      id: folder name under ``runs/<experiment>/``: ``axis=label`` pairs and ``seed=N``
        joined by commas, so that it changes exactly when the run's overrides do.
      config: the config spec (absolute path) the run loads.
      overrides: the experiment's overrides, then the levels' settings, then the seed.
      levels: axis name -> level label.
      seed: the value of the experiment's ``seed_key``.
    """

    id: str
    config: str
    overrides: tuple[str, ...]
    levels: Mapping[str, str]
    seed: int


def format_override(key: str, value: Any) -> str:
    """``key=value`` that the config loader parses back to ``value``: strings stay bare when
    they would not be read as another literal (``adv.method=fgm``), else ``repr`` is used
    (``data.tokenizer='1'``, ``data.length_buckets=(32, 64)``)."""
    from llama_adv.config.loading import parse_value

    if isinstance(value, str) and parse_value(value) == value and value.strip() == value:
        return f"{key}={value}"
    return f"{key}={value!r}"


def _run_id(levels: Mapping[str, str], seed: int) -> str:
    parts = [f"{_UNSAFE.sub('-', n)}={_UNSAFE.sub('-', v)}" for n, v in levels.items()]
    return ",".join([*parts, f"seed={seed}"])


def resolve_config_spec(spec: str, experiment_path: str | Path) -> str:
    """The config spec with its file made absolute: found from the current directory,
    else from the repository holding the experiment file (``experiments/..``)."""
    file, sep, variant = spec.partition(":")
    candidates = [Path(file)]
    if not Path(file).is_absolute():
        candidates.append(Path(experiment_path).resolve().parent.parent / file)
    for candidate in candidates:
        if candidate.is_file():
            return f"{candidate.resolve()}{sep}{variant}"
    raise UserError(f"{experiment_path}: config file {file} does not exist.")


def expand(exp: Experiment) -> list[RunSpec]:
    """One run per seed and combination of axis levels; seeds vary slowest, so a partial
    sweep has every setting of the first seed first."""
    base = resolve_config_spec(exp.config, exp.path)
    runs = []
    for seed in exp.seeds:
        for combo in itertools.product(*(a.levels for a in exp.axes)):
            config, overrides = base, list(exp.overrides)
            for level in combo:
                for key, value in level.settings.items():
                    if key == CONFIG_KEY:
                        config = resolve_config_spec(value, exp.path)
                    else:
                        overrides.append(format_override(key, value))
            levels = {a.name: lv.label for a, lv in zip(exp.axes, combo, strict=True)}
            overrides.append(format_override(exp.seed_key, seed))
            runs.append(RunSpec(_run_id(levels, seed), config, tuple(overrides), levels, seed))
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(
            f"{exp.path}: two runs get the id {dup!r}; give their levels distinct labels."
        )
    return runs


def _check_key(key: str, keys: set[str], where: str) -> None:
    sections = {k.rsplit(".", 1)[0] for k in keys}
    if key in keys or key in sections or key == CONFIG_KEY:
        return
    close = difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.6)
    hint = f" Closest valid keys: {', '.join(close)}." if close else ""
    raise UserError(f"{where}: {key!r} is not a config key.{hint}")


def validate(exp: Experiment) -> None:
    """Checks names and references inside ``exp``; raises UserError naming the problem."""
    from llama_adv.config import get_default_config
    from llama_adv.config.loading import all_keys

    where = exp.path or exp.name or "experiment"
    keys = set(all_keys(get_default_config()))
    _check_key(exp.seed_key, keys, f"{where}: seed_key")
    for item in exp.overrides:
        if "=" not in item:
            raise UserError(f"{where}: override {item!r} must look like section.key=value.")
        _check_key(item.split("=", 1)[0].strip(), keys, f"{where}: override {item!r}")
    axis_names = [a.name for a in exp.axes]
    if len(set(axis_names)) != len(axis_names):
        raise UserError(f"{where}: axis names must be distinct, got {axis_names}.")
    for a in exp.axes:
        if a.name == "seed":
            raise UserError(f"{where}: 'seed' is reserved; list seeds in Experiment.seeds.")
        if not a.levels:
            raise UserError(f"{where}: axis {a.name!r} has no levels.")
        if len(set(a.labels)) != len(a.labels):
            raise UserError(f"{where}: axis {a.name!r} has repeated labels {list(a.labels)}.")
        for level in a.levels:
            for key in level.settings:
                _check_key(key, keys, f"{where}: axis {a.name!r}")
    if not exp.seeds or len(set(exp.seeds)) != len(exp.seeds):
        raise UserError(f"{where}: seeds must be a non-empty list of distinct integers.")

    def known_axis(name: str, what: str) -> None:
        if name not in axis_names:
            raise UserError(f"{where}: {what} names axis {name!r}; axes are {axis_names}.")

    placed = [*exp.table.rows, *exp.table.columns]
    for name in placed:
        known_axis(name, "table")
    # An axis in neither rows nor columns would be averaged over silently, like a seed.
    if sorted(placed) != sorted(axis_names):
        raise UserError(
            f"{where}: every axis must be in exactly one of table rows/columns; "
            f"rows={list(exp.table.rows)}, columns={list(exp.table.columns)}, axes={axis_names}."
        )
    metric_names = [m.name for m in exp.metrics]
    if len(set(metric_names)) != len(metric_names):
        raise UserError(f"{where}: metric names must be distinct, got {metric_names}.")

    def known_metric(name: str, what: str) -> None:
        if name not in metric_names:
            raise UserError(f"{where}: {what} names metric {name!r}; metrics: {metric_names}.")

    for m in exp.metrics:
        if m.best not in ("max", "min", ""):
            raise UserError(f"{where}: metric {m.name!r}: best must be max, min or ''.")
        for name, label in (m.relative_to or {}).items():
            known_axis(name, f"metric {m.name!r}")
            if label not in exp.axis(name).labels:
                raise UserError(
                    f"{where}: metric {m.name!r} is relative to {name}={label!r}, which is "
                    f"not a level of that axis ({list(exp.axis(name).labels)})."
                )
    for name in exp.table.metrics:
        known_metric(name, "table")
    for ref in exp.table.references:
        known_metric(ref.metric, f"reference {ref.label!r}")
    for p in exp.plots:
        if p.kind not in ("line", "bar", "scatter"):
            raise UserError(f"{where}: plot {p.name!r}: kind must be line, bar or scatter.")
        if p.kind == "scatter":
            known_metric(p.x, f"plot {p.name!r}")
        else:
            known_axis(p.x, f"plot {p.name!r}")
        for y in p.y:
            known_metric(y, f"plot {p.name!r}")


class VariantError(UserError):
    """A ``:variant`` that its experiment or config file could not use."""


def variant_error(where: str, variant: str, error: Exception) -> VariantError:
    """A one-line error for a ``:variant`` its file could not use (``int("abc")``)."""
    return VariantError(f"{where}: variant {variant!r} is not valid ({type(error).__name__}: "
                        f"{error}).")  # fmt: skip


def experiment_name(path: Path, arg: str | None) -> str:
    """``<file stem>`` or ``<file stem>-<arg>`` (a variant gets its own runs and results)."""
    return path.stem + (f"-{_UNSAFE.sub('-', arg)}" if arg else "")


def load_experiment(spec: str) -> Experiment:
    """Loads ``experiments/<name>.py[:arg]``: calls its ``get_experiment(arg)``, fills in
    ``name`` and ``path`` and validates the result.

    Raises:
      UserError: a missing file, no ``get_experiment``, a variant it cannot use or
        ignores, or an invalid experiment.
    """
    file, _, arg = spec.partition(":")
    path = Path(file)
    if path.is_dir():
        raise UserError(f"Experiment file {path} is a folder; give experiments/<name>.py.")
    if not path.is_file():
        raise UserError(f"Experiment file {path} does not exist.")
    if path.suffix != ".py":
        raise UserError(f"Experiment file {path} must be a .py file with get_experiment.")
    module_spec = importlib.util.spec_from_file_location(f"llama_adv_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        raise UserError(f"{path}:{error.lineno}: syntax error: {error.msg}.") from None
    if not hasattr(module, "get_experiment"):
        raise UserError(f"Experiment file {path} does not define get_experiment(arg=None).")
    if not arg:
        exp = module.get_experiment()
    else:
        try:
            exp = module.get_experiment(arg)
        except (TypeError, ValueError) as error:
            raise variant_error(str(path), arg, error) from None
    if not isinstance(exp, Experiment):
        raise UserError(f"{path}: get_experiment must return llama_adv.experiments.Experiment.")
    if arg and _same_without(module, exp):
        # It would run the default experiment again under another name (runs/<name>-<arg>).
        raise UserError(
            f"{path}: get_experiment ignores the variant {arg!r} (it returns the same "
            f"experiment without it); leave out ':{arg}'."
        )
    exp = dataclasses.replace(exp, name=exp.name or experiment_name(path, arg), path=str(path))
    validate(exp)
    return exp


def _same_without(module: Any, exp: Experiment) -> bool:
    try:
        return module.get_experiment() == exp
    except Exception:  # needs its argument: it does not ignore it
        return False
