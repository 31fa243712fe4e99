"""The sweep index ``runs/<name>/index.json``: one entry per run, written atomically.

A sweep rewrites the index after every change of a run's status. Readers (``llama-adv
table``, a person, another sweep after a crash) must never see half a file, so every write
goes to a temporary file in the same folder which then replaces the index in one
``os.replace`` (atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from llama_adv.errors import UserError

INDEX_FILE = "index.json"
# Statuses a run's entry can have.
PENDING, RUNNING, DONE, FAILED, INTERRUPTED = "pending", "running", "done", "failed", "interrupted"


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of ``pid`` from ``/proc``, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (command) "
    return fields[0], fields[19]


def process_identity(pid: int) -> dict[str, Any]:
    """What an index entry records of a run's process, so that a reader can tell whether
    that very process still runs: its ``pid``, the ``host`` and, on Linux, ``pid_start``
    (boot id and start time: a later process that gets the same pid differs in it)."""
    stat = _proc_stat(pid)
    start = f"{_boot_id()}/{stat[1]}" if stat else None
    return {"pid": pid, "host": socket.gethostname(), "pid_start": start}


def process_alive(entry: dict[str, Any]) -> bool | None:
    """Whether the process an entry records (see :func:`process_identity`) still runs:
    None if the entry names no process or one on another host (which cannot be checked
    from here); a zombie counts as ended."""
    pid = entry.get("pid")
    if not isinstance(pid, int) or entry.get("host") != socket.gethostname():
        return None
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        recorded = entry.get("pid_start")
        return state not in ("Z", "X") and (not recorded or recorded == f"{_boot_id()}/{start}")
    try:  # no /proc (not Linux): whether any process has that pid
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path("/proc/self").exists()  # /proc exists but lacks pid: it ended


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` to ``path`` so that ``path`` holds either its old or its new content,
    whatever happens to this process meanwhile.

    The temporary file is named after this process, so two writers never share one; it is
    removed if writing fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # Make the rename itself durable; not every platform can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_index(path: str | Path) -> dict[str, Any]:
    """The index at ``path``, or an empty one (``{"runs": {}}``) if there is none.

    Raises:
      UserError: the file exists but is not a JSON object.
    """
    path = Path(path)
    if not path.exists():
        return {"runs": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); delete it to rebuild it.") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
        raise UserError(f"{path} is not a sweep index (no 'runs' object).")
    return data


def write_index(path: str | Path, index: dict[str, Any]) -> None:
    """Writes ``index`` (a JSON-serialisable dict with a ``runs`` mapping) atomically."""
    # Serialise first: an unserialisable value must fail before anything is written.
    text = json.dumps(index, indent=2) + "\n"
    atomic_write_text(path, text)
