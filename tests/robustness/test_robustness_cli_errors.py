"""Bad robustness input: exit status 2, one line on stderr naming the field or file, and the
run's workdir untouched (checked before anything is built, attacked or written)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llama_adv.cli import main
from llama_adv.config import get_default_config
from llama_adv.robustness import validate_robustness_config

SST2 = {"sst2": [{"idx": 0, "sentence": "not good", "label": 0}]}

# (case id, files to write {name: text or bytes}, CLI arguments, text the error must name)
CASES = [
    ("suite-flag", {}, ["--suite", "fast"], "--suite 'fast'"),
    ("suite-config", {}, ["--config.robustness.suite=fast"], "robustness.suite"),
    ("advset-suite-without-set", {}, ["--suite", "advset"], "--adv-set"),
    ("limit", {}, ["--limit", "-1"], "--limit"),
    ("embedding-attack", {}, ["--config.robustness.embedding_attacks=('pgd_l3',)"],
     "robustness.embedding_attacks"),
    ("discrete-attack", {}, ["--config.robustness.discrete_attacks=('textfooler',)"],
     "robustness.discrete_attacks"),
    ("noise-name", {}, ["--config.robustness.noise=('shuffle',)"], "robustness.noise"),
    ("negative-epsilon", {}, ["--config.robustness.epsilons=(0.0,-0.5)"], "robustness.epsilons"),
    ("text-epsilon", {}, ["--config.robustness.linf_epsilons=('a',)"],
     "robustness.linf_epsilons"),
    ("no-radius", {}, ["--config.robustness.epsilons=()"], "robustness.epsilons"),
    ("batch-size", {}, ["--config.robustness.batch_size=0"], "robustness.batch_size"),
    ("pgd-steps", {}, ["--config.robustness.pgd_steps=0"], "robustness.pgd_steps"),
    ("pgd-step-size", {}, ["--config.robustness.pgd_step_size=-1.0"],
     "robustness.pgd_step_size"),
    ("scope", {}, ["--config.robustness.scope=sequence"], "robustness.scope"),
    ("sub-budget", {}, ["--config.robustness.sub_budget=1.5"], "robustness.sub_budget"),
    ("sub-neighbors", {}, ["--config.robustness.sub_neighbors=0"], "robustness.sub_neighbors"),
    ("char-budget", {}, ["--config.robustness.char_budget=0"], "robustness.char_budget"),
    ("noise-rate", {}, ["--config.robustness.noise_rates=(0.1,2.0)"], "robustness.noise_rates"),
    ("seed", {}, ["--config.robustness.seed=-1"], "robustness.seed"),
    ("saved-examples", {}, ["--config.robustness.num_saved_examples=-1"],
     "robustness.num_saved_examples"),
    ("unknown-key", {}, ["--config.robustness.epsilon=0.5"], "robustness.epsilons"),
    ("set-missing", {}, ["--adv-set", "{tmp}/nowhere.json"], "nowhere.json"),
    ("set-bad-json", {"a.json": '{"sst2": [{"sentence": "x", "label": 1},]}'},
     ["--adv-set", "{tmp}/a.json"], "a.json is not valid JSON"),
    ("set-not-object", {"a.json": "[1, 2]"}, ["--adv-set", "{tmp}/a.json"], "a.json"),
    ("set-no-task", {"a.json": json.dumps(SST2)}, ["--adv-set", "{tmp}/a.json", "--adv-task",
     "qqp"], "no task 'qqp'"),
    ("set-row-no-label", {"a.json": '{"sst2": [{"sentence": "x"}]}'},
     ["--adv-set", "{tmp}/a.json"], "lacks label"),
    ("set-text-label", {"a.json": '{"sst2": [{"sentence": "x", "label": "good"}]}'},
     ["--adv-set", "{tmp}/a.json"], "a.json: sst2 row 0"),
    ("set-label-range", {"a.tsv": "fine\t1\nodd\t7\n"}, ["--adv-set", "{tmp}/a.tsv"],
     "example 1 has label 7"),
    ("tsv-no-tab", {"a.tsv": "good\t1\nno tab here\n"}, ["--adv-set", "{tmp}/a.tsv"],
     "a.tsv:2"),
    ("tsv-bad-label", {"a.tsv": "good\t1\nbad\tneg\n"}, ["--adv-set", "{tmp}/a.tsv"],
     "a.tsv:2"),
    ("tsv-empty", {"a.tsv": "sentence\tlabel\n"}, ["--adv-set", "{tmp}/a.tsv"],
     "holds no examples"),
    ("tsv-not-utf8", {"a.tsv": b"caf\xe9\t1\n"}, ["--adv-set", "{tmp}/a.tsv"], "not UTF-8"),
    ("config-set-missing", {}, ["--config.robustness.adv_set={tmp}/gone.tsv"], "gone.tsv"),
]  # fmt: skip


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize(("files", "args", "named"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tiny_run, tmp_path, capsys, files, args, named
):
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    before = snapshot(tiny_run)
    assert main(["robustness", "--workdir", str(tiny_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llama-adv: error: ") and err.count("\n") == 1, err
    assert named in err, err
    assert snapshot(tiny_run) == before  # no robustness/ folder, nothing else changed
    assert not (tiny_run / "robustness").exists()


def test_compare_checks_every_run_before_attacking_any(tiny_run, tmp_path, capsys):
    bad = tmp_path / "bad"  # the same run, its config edited to a bad value
    shutil.copytree(tiny_run, bad)
    config = json.loads((bad / "config.json").read_text())
    config["robustness"]["pgd_steps"] = 0
    (bad / "config.json").write_text(json.dumps(config))
    before = snapshot(tiny_run)
    argv = ["robustness", "--compare", str(tiny_run), str(bad), "--workdir", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "robustness.pgd_steps" in capsys.readouterr().err
    assert snapshot(tiny_run) == before and not (tmp_path / "c").exists()
    assert not (bad / "robustness").exists()


def test_defaults_pass_and_the_validator_imports_without_jax():
    section = get_default_config().robustness
    validate_robustness_config(section)
    section.suite = "advset"  # a training config may leave the set to --adv-set
    validate_robustness_config(section)
    code = (
        "import sys; from llama_adv.robustness import validate_robustness_config; "
        "assert 'jax' not in sys.modules and 'llama_adv.robustness.suite' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
