"""The command line: exit codes, readable errors, and the quickstart end to end."""

import json
import subprocess
import sys

from llama_adv.cli import main
from llama_adv.quickstart import run_quickstart


def run_cli(repo, *args):
    return subprocess.run(
        [sys.executable, "-m", "llama_adv", *args],
        cwd=repo, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_train_subcommand_with_overrides(repo, tmp_path):
    result = run_cli(repo, "train", "--config", "configs/quickstart.py:tiny",
                     "--workdir", str(tmp_path), "--config.adv.method=fgm",
                     "--config.adv.epsilon", "0.2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["adv"]["method"] == "fgm" and config["adv"]["epsilon"] == 0.2
    assert "attack_accuracy=" in result.stdout


def test_bad_key_is_one_readable_line_and_nonzero_exit(repo, tmp_path):
    result = run_cli(repo, "train", "--config", "configs/quickstart.py:tiny",
                     "--workdir", str(tmp_path / "run"), "--config.adv.epsilom=0.2")  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("llama-adv: error: Unknown config key 'adv.epsilom'. Closest valid")
    assert "adv.epsilon" in line
    assert not (tmp_path / "run").exists()


def test_main_returns_error_code_in_process(capsys):
    assert main(["train", "--config", "configs/missing.py", "--workdir", "/tmp/x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_quickstart_end_to_end_shrunk(tmp_path, capsys):
    table = run_quickstart(tmp_path, method="fgm", variant="tiny")
    lines = table.splitlines()
    assert lines[0].startswith("| method | clean accuracy | accuracy under attack")
    assert lines[2].startswith("| none |") and lines[3].startswith("| fgm |")
    assert (tmp_path / "table.md").read_text().count("|") > 10
    for name in ("none", "fgm"):
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["method"] == name and summary["step"] == 6
