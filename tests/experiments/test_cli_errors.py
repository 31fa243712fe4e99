"""Repeated ``--only`` flags combine."""

from _sweep_helpers import QUICKSTART

from llama_adv.cli import _command_line, build_parser, main

# Its variant (":steps=N") is typed by parse_variant.
EXPERIMENT = f"""
from llama_adv.config import parse_variant

def get_experiment(arg=None):
    variant = parse_variant(arg, steps=10)
    return Experiment(
        config="{QUICKSTART}:tiny",
        overrides=(f"train.num_steps={{variant['steps']}}",),
        axes=(axis("adv.method", ["none", "fgm"], name="method"),),
        table=Table(rows=("method",)),
    )
"""


def test_repeated_only_flags_combine(write_experiment, tmp_path, capsys):
    spec = write_experiment(EXPERIMENT)
    argv = ["sweep", spec, "--runs-dir", str(tmp_path / "runs"), "--dry-run",
            "--only", "fgm", "--only", "*none*"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    planned = [ln.split()[1] for ln in out.splitlines() if ln.startswith("run ")]
    assert planned == ["method=none,seed=0", "method=fgm,seed=0"]  # the experiment's order
    assert "exp: 2 to run" in out
    args = build_parser().parse_args(argv)
    command = _command_line("sweep", args, ("runs_dir", "parallel", "only", "dry_run"))
    assert command.endswith("--only fgm --only '*none*' --dry-run")
