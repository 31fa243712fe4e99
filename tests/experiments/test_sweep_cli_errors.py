"""Bad input to ``llama-adv sweep`` and ``llama-adv table``: one line on stderr, exit 2, and
nothing run. Also repeated ``--only`` flags, which combine."""

import re

import pytest
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
# Converts its variant itself (a str default), so a bad value raises ValueError there.
SELF_PARSED = f"""
from llama_adv.config import parse_variant

def get_experiment(arg=None):
    steps = int(parse_variant(arg, steps="10")["steps"])
    return Experiment(config="{QUICKSTART}:tiny", overrides=(f"train.num_steps={{steps}}",),
                      table=Table(rows=()))
"""
IGNORES_ARG = f"""
def get_experiment(arg=None):
    return Experiment(config="{QUICKSTART}:tiny", table=Table(rows=()))
"""
BAD_CONFIG_VARIANT = f"""
def get_experiment(arg=None):
    return Experiment(config="{QUICKSTART}:steps=abc", table=Table(rows=()))
"""

FILE_IS_NOT_A_FOLDER = r"--runs-dir: \S*afile is a file, not a folder\.$"
CASES = {
    "missing experiment file": (["sweep", "{tmp}/nope.py"], r"Experiment file \S+nope\.py does "
                                r"not exist\.$"),
    "experiment folder": (["sweep", "{tmp}", "--dry-run"], r"is a folder; give experiments/"),
    "syntax error": (["sweep", "{syntax}"], r"syntax\.py:\d+: syntax error: "),
    "no get_experiment": (["table", "{noget}"], r"does not define get_experiment\(arg=None\)\.$"),
    "wrong-typed variant": (["sweep", "{exp}:steps=abc", "--dry-run"],
                            r"variant steps='abc' must be int"),
    "variant without its value": (["sweep", "{exp}:steps", "--dry-run"],
                                r"variant 'steps' needs a value: steps=<int>"),
    "unknown variant": (["sweep", "{exp}:stepz=3"], r"Unknown config variant 'stepz'\. Did you "
                        r"mean steps\?"),
    "variant the file cannot use": (["sweep", "{self_parsed}:steps=abc"],
                                    r"self_parsed\.py: variant 'steps=abc' is not valid "
                                    r"\(ValueError: invalid literal for int\(\).*'abc'\)\.$"),
    "variant the file ignores": (["sweep", "{ignores}:fast", "--dry-run"],
                                 r"ignores\.py: get_experiment ignores the variant 'fast'"),
    "wrong-typed config variant": (["sweep", "{bad_config}"],
                                   r"bad_config\.py: config \S+quickstart\.py:steps=abc: "
                                   r".*variant steps='abc' must be int"),
    "--parallel 0": (["sweep", "{exp}", "--parallel", "0"],
                     r"--parallel must be a whole number of at least 1, got 0\.$"),
    "--parallel -2": (["sweep", "{exp}", "--parallel", "-2", "--dry-run"], r"got -2\.$"),
    "sweep --runs-dir a file": (["sweep", "{exp}", "--runs-dir", "{file}"], FILE_IS_NOT_A_FOLDER),
    "dry run --runs-dir in a file": (["sweep", "{exp}", "--runs-dir", "{file}/runs", "--dry-run"],
                                     FILE_IS_NOT_A_FOLDER),
    "table --runs-dir a file": (["table", "{exp}", "--runs-dir", "{file}"], FILE_IS_NOT_A_FOLDER),
    "table --out a file": (["table", "{exp}", "--runs-dir", "{runs}", "--out", "{file}"],
                           r"--out: \S*afile is a file, not a folder\.$"),
    "table without runs": (["table", "{exp}", "--runs-dir", "{tmp}/elsewhere"],
                           r"No runs of exp in \S+elsewhere/exp; run `llama-adv sweep "),
    "--only matching nothing": (["sweep", "{exp}", "--only", "none", "--only", "adam"],
                                r"--only 'adam' matches no run; run ids look like: method="),
    "corrupt index": (["sweep", "{exp}", "--runs-dir", "{corrupt}", "--dry-run"],
                      r"index\.json is not valid JSON"),
}  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_and_exit_status_2(argv, message, write_experiment, tmp_path,
                                                 capsys):  # fmt: skip
    paths = {
        "tmp": tmp_path,
        "exp": write_experiment(EXPERIMENT),
        "self_parsed": write_experiment(SELF_PARSED, name="self_parsed"),
        "ignores": write_experiment(IGNORES_ARG, name="ignores"),
        "bad_config": write_experiment(BAD_CONFIG_VARIANT, name="bad_config"),
        "syntax": write_experiment("def get_experiment(arg=None:\n    pass\n", name="syntax"),
        "noget": write_experiment("X = 1\n", name="noget"),
        "file": tmp_path / "afile",
        "runs": tmp_path / "runs",
        "corrupt": tmp_path / "corrupt",
    }
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "runs" / "exp").mkdir(parents=True)
    (tmp_path / "corrupt" / "exp").mkdir(parents=True)
    (tmp_path / "corrupt" / "exp" / "index.json").write_text('{"runs": {')
    before = sorted(tmp_path.rglob("*"))
    assert main([part.format(**paths) for part in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("llama-adv: error: "), captured.err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in captured.out + captured.err
    after = [p for p in sorted(tmp_path.rglob("*")) if "__pycache__" not in p.parts]
    assert after == [p for p in before if "__pycache__" not in p.parts]  # nothing written


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
