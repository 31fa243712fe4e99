"""A broken latest checkpoint: one line on stderr naming it, then the run resumes from the
newest readable one and reproduces the uninterrupted run's losses from there on."""

import shutil
from pathlib import Path

import pytest
from workdir_helpers import each_step_once, keys, load, losses, rows

from llama_adv.errors import UserError
from llama_adv.train import train_and_evaluate


def truncate_array_file(step: Path) -> None:
    biggest = max((step / "state").rglob("d/*"), key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as handle:
        handle.truncate(biggest.stat().st_size // 2)


def delete_metadata(step: Path) -> None:
    (step / "state" / "_METADATA").unlink()


def delete_manifests(step: Path) -> None:
    for manifest in (step / "state").rglob("manifest.ocdbt"):
        manifest.unlink()


def break_record(step: Path) -> None:
    (step / "record" / "metadata").write_text('{"data_posi')


def killed_after_the_last_checkpoint(reference_run: Path, workdir: Path) -> Path:
    """The reference run as if killed before it wrote summary.json (checkpoints 4 and 8)."""
    shutil.copytree(reference_run, workdir)
    (workdir / "summary.json").unlink()
    return workdir / "checkpoints"


@pytest.mark.parametrize(
    "corrupt", [truncate_array_file, delete_metadata, delete_manifests, break_record]
)
def test_resumes_from_the_newest_readable_checkpoint(tmp_path, reference_run, capsys, corrupt):
    workdir = tmp_path / "run"
    checkpoints = killed_after_the_last_checkpoint(reference_run, workdir)
    corrupt(checkpoints / "8")

    summary = train_and_evaluate(load(), workdir)
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if "unreadable" in line]
    assert len(warnings) == 1 and f"checkpoint {checkpoints / '8'} is unreadable" in warnings[0]
    assert "resuming from step 4" in warnings[0] and "Traceback" not in err
    assert "resumed from step 4" in out
    assert keys(workdir) == each_step_once()
    assert losses(workdir) == losses(reference_run)  # steps 5-8 trained again, bitwise
    assert rows(workdir)[-1] == rows(reference_run)[-1]
    assert summary["step"] == 8 and (checkpoints / "8").is_dir()  # saved again
    assert (workdir / "checkpoints_unreadable" / "8").is_dir()  # the broken one, set aside


def test_no_readable_checkpoint_is_a_one_line_error(tmp_path, reference_run):
    workdir = tmp_path / "run"
    checkpoints = killed_after_the_last_checkpoint(reference_run, workdir)
    delete_metadata(checkpoints / "8")
    break_record(checkpoints / "4")
    before = (workdir / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError) as error:
        train_and_evaluate(load(), workdir)
    message = str(error.value)
    assert f"No checkpoint in {checkpoints} can be read" in message
    assert "step 8 (" in message and "4 (" in message and "--overwrite" in message
    assert "\n" not in message
    assert (workdir / "metrics.jsonl").read_bytes() == before  # nothing changed
    assert sorted(p.name for p in checkpoints.iterdir()) == ["4", "8"]
