"""The sweep index is written atomically: a reader sees the old or the new file, never half."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from llama_adv.errors import UserError
from llama_adv.experiments import index as index_module
from llama_adv.experiments.index import read_index, write_index

OLD = {"runs": {"a": {"status": "done"}}}


def _new(size: int = 2000) -> dict:
    return {"runs": {f"run{i}": {"status": "pending", "pad": "x" * 200} for i in range(size)}}


def test_failure_after_a_partial_temp_write_keeps_the_old_index(tmp_path, monkeypatch):
    path = tmp_path / "index.json"
    write_index(path, OLD)

    def fsync_fails(fd):  # the temp file holds (part of) the new text by now
        assert os.fstat(fd).st_size > 0
        raise OSError("disk full")

    monkeypatch.setattr(index_module.os, "fsync", fsync_fails)
    with pytest.raises(OSError, match="disk full"):
        write_index(path, _new())
    assert read_index(path) == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]  # no temp left


def test_failed_rename_keeps_the_old_index(tmp_path, monkeypatch):
    path = tmp_path / "index.json"
    write_index(path, OLD)
    monkeypatch.setattr(index_module.os, "replace", lambda *a: (_ for _ in ()).throw(OSError()))
    with pytest.raises(OSError):
        write_index(path, _new(3))
    assert read_index(path) == OLD and len(list(tmp_path.iterdir())) == 1


def test_unserialisable_index_writes_nothing(tmp_path):
    path = tmp_path / "index.json"
    write_index(path, OLD)
    with pytest.raises(TypeError):
        write_index(path, {"runs": {"a": object()}})
    assert read_index(path) == OLD


WRITER = """
import sys
from llama_adv.experiments.index import write_index
path = sys.argv[1]
versions = [
    {"runs": {f"run{i}": {"version": v, "pad": "x" * 300} for i in range(3000)}}
    for v in range(2)
]
print("ready", flush=True)
n = 0
while True:
    write_index(path, versions[n % 2])
    n += 1
"""


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4])
def test_killing_the_writer_mid_write_leaves_a_valid_index(tmp_path, delay):
    """SIGKILL at an arbitrary moment of a loop of ~1 MB writes: the index parses and is
    entirely one version."""
    path = tmp_path / "index.json"
    write_index(path, OLD)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = read_index(path)  # raises if half-written
    versions = {entry.get("version") for entry in data["runs"].values()}
    assert data == OLD or (len(versions) == 1 and len(data["runs"]) == 3000)


def test_missing_and_corrupt_index(tmp_path):
    assert read_index(tmp_path / "none.json") == {"runs": {}}
    bad = tmp_path / "bad.json"
    bad.write_text('{"runs": {')
    with pytest.raises(UserError, match="is not valid JSON"):
        read_index(bad)
    bad.write_text(json.dumps([1]))
    with pytest.raises(UserError, match="not a sweep index"):
        read_index(bad)
