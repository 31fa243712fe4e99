"""Helpers for the sweep and report tests: experiment files written into tmp_path."""

import textwrap

import pytest

HEADER = """\
from llama_adv.experiments import (
    Experiment, Metric, Plot, Reference, Table, accuracy_metrics, axis, named_axis, zip_axis,
)
"""


@pytest.fixture
def write_experiment(tmp_path):
    """``write(body, name="exp")``: writes ``tmp_path/<name>.py`` holding the imports above
    and ``body`` (which defines ``get_experiment``); returns its path as a string."""

    def write(body: str, name: str = "exp") -> str:
        path = tmp_path / f"{name}.py"
        path.write_text(HEADER + textwrap.dedent(body))
        return str(path)

    return write
