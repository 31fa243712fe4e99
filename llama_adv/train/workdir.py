"""A run's workdir: checks before anything is written, one ``train`` at a time, what a
changed config means for the run in it, and ``--overwrite``.

The identity of a run is its *defining* fields, the ones that decide the numbers it
trains to: everything but :data:`NON_DEFINING` (logging, evaluation, checkpointing,
robustness settings and where the data files are). A workdir whose run differs in a
defining field is refused; other changes are applied to the resumed run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llama_adv.errors import UserError

SESSIONS_FILE = "sessions.jsonl"  # one line per `train` that trained in the workdir
LOCK_FILE = ".train.lock"  # held (flock) by the one `train` process of a workdir
UNREADABLE_DIR = "checkpoints_unreadable"  # where unreadable checkpoints are moved aside
# Fields (dotted prefixes) that do not change what a run trains to: a resumed run may
# change them. train.num_devices is defining: the cross-device sums change the losses'
# last bits (a resumed run would no longer reproduce an uninterrupted one).
NON_DEFINING = (
    "train.log_every",
    "train.progress_bar",
    "train.eval_every",
    "eval",
    "checkpoint",
    "robustness",
    "data.data_dir",  # where the files are, not what they are
    "data.manual_dir",
    "data.cache_dir",
)
# Names a run's workdir holds; --overwrite refuses to empty a folder holding none of them.
RUN_MARKERS = ("config.json", "metrics.jsonl", "summary.json", "checkpoints", "tensorboard",
               SESSIONS_FILE, "robustness", "init_report.json", "train.log",
               UNREADABLE_DIR)  # fmt: skip


def check_workdir(workdir: Path) -> None:
    """Raises UserError if ``workdir`` cannot hold a run: a file, under a file, or in a
    folder this process cannot write. Writes nothing."""
    if workdir.is_symlink() and not workdir.exists():
        raise UserError(f"--workdir {workdir} is a broken symbolic link; remove it or pass "
                        "another --workdir.")  # fmt: skip
    if workdir.exists():
        if not workdir.is_dir():
            raise UserError(f"--workdir {workdir} is a file, not a directory; pass a directory "
                            "(it is created if missing).")  # fmt: skip
        if not os.access(workdir, os.W_OK | os.X_OK):
            raise UserError(f"--workdir {workdir} is not writable by this user; fix its "
                            "permissions or pass another --workdir.")  # fmt: skip
        return
    ancestor = workdir.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"--workdir {workdir} cannot be created: {ancestor} is a file, not a "
                        "directory.")  # fmt: skip
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"--workdir {workdir} cannot be created: {ancestor} is not writable by "
                        "this user; pass a --workdir in a folder you can write.")  # fmt: skip


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Creates ``workdir`` and holds an exclusive ``flock`` on its lock file while the body
    runs: one ``train`` per workdir. The kernel drops the lock with the process, so a
    killed run leaves no stale lock.

    Raises:
      UserError: another process holds the lock (named by its PID), or ``workdir`` cannot
        be created.
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise UserError(f"--workdir {workdir} cannot be used: {error.strerror}.") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(
                f"{workdir} is in use by another `llama-adv train` (PID {holder} holds "
                f"{workdir / LOCK_FILE}); wait for it to end or stop it, or use another "
                "--workdir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def clear_workdir(workdir: Path) -> None:
    """``--overwrite``: deletes everything in ``workdir`` but the lock file (held by this
    process), ``config.json`` last. Refuses a non-empty folder that holds no run."""
    entries = [p for p in workdir.iterdir() if p.name != LOCK_FILE]
    if entries and not any(p.name in RUN_MARKERS for p in entries):
        raise UserError(
            f"--overwrite: {workdir} does not look like a run's workdir (no config.json, "
            "checkpoints/ or metrics.jsonl); refusing to delete its contents. Pass a new or "
            "empty --workdir."
        )
    for path in sorted(entries, key=lambda p: p.name == "config.json"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def is_defining(key: str) -> bool:
    """Whether the dotted config ``key`` is part of a run's identity."""
    return not any(key == p or key.startswith(p + ".") for p in NON_DEFINING)


def config_changes(
    old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[str]:
    """Dotted keys whose values differ between two resolved configs (as JSON dicts).

    A key ``old`` lacks whose ``new`` value is its value in ``defaults`` (an option a
    later llama_adv added, left at its default, which keeps the old behaviour) is not a
    difference, so a run resumes under a newer version.
    """
    a, b = _flatten(old), _flatten(new)
    added_at_default = set()
    if defaults is not None:
        d = _flatten(defaults)
        added_at_default = {k for k in b.keys() - a.keys() if k in d and d[k] == b[k]}
    return [
        k
        for k in sorted(a.keys() | b.keys())
        if a.get(k, _MISSING) != b.get(k, _MISSING) and k not in added_at_default
    ]


_MISSING = object()


def read_run_config(workdir: Path) -> dict[str, Any] | None:
    """The resolved config of the run in ``workdir`` (None if there is none yet).

    Raises:
      UserError: ``config.json`` is not a JSON object, or the workdir holds run files
        without one.
    """
    path = workdir / "config.json"
    if not path.exists():
        if (workdir / "metrics.jsonl").exists() or any((workdir / "checkpoints").glob("*")):
            raise UserError(
                f"{workdir} holds a run's files but no config.json, so it cannot be checked "
                "against this config. Pass --overwrite to delete that run and start again, "
                "or use another --workdir."
            )
        return None
    try:
        old = json.loads(path.read_text())
    except (ValueError, OSError) as error:
        why = error.strerror if isinstance(error, OSError) else str(error)
        raise UserError(
            f"{path} is unreadable ({why}), so the run in {workdir} cannot be checked against "
            "this config. Pass --overwrite to delete that run and start again, or use another "
            "--workdir."
        ) from None
    if not isinstance(old, dict):
        raise UserError(f"{path} is not a run config (a JSON object). Pass --overwrite to "
                        "delete that run and start again, or use another --workdir.")  # fmt: skip
    return old


def check_same_run(
    workdir: Path, old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[str]:
    """The non-defining keys that changed since the run in ``workdir`` was started
    (options added since, at their ``defaults``, are no change: :func:`config_changes`).

    Raises:
      UserError: a defining field differs (a different run).
    """
    changed = config_changes(old, new, defaults)
    defining = [k for k in changed if is_defining(k)]
    if defining:
        raise UserError(
            f"{workdir} holds a run with a different config (differs in: "
            f"{', '.join(defining[:6])}{', ...' if len(defining) > 6 else ''}). Use another "
            "--workdir, or pass --overwrite to delete that run and start again."
        )
    return changed


def describe_changes(old: dict[str, Any], new: dict[str, Any], keys: list[str]) -> str:
    """``"train.log_every 1 -> 2, eval.batch_size 32 -> 64"`` (values shortened)."""
    a, b = _flatten(old), _flatten(new)

    def short(value: Any) -> str:
        text = "(unset)" if value is _MISSING else json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."

    return ", ".join(f"{k} {short(a.get(k, _MISSING))} -> {short(b.get(k, _MISSING))}"
                     for k in keys)  # fmt: skip


def set_aside(workdir: Path, checkpoint: Path) -> Path:
    """Moves an unreadable checkpoint folder to ``workdir/checkpoints_unreadable/`` (out of
    orbax's sight, so the step can be saved again); returns where it went."""
    target_dir = workdir / UNREADABLE_DIR
    target_dir.mkdir(exist_ok=True)
    target, n = target_dir / checkpoint.name, 1
    while target.exists():
        target, n = target_dir / f"{checkpoint.name}.{n}", n + 1
    checkpoint.rename(target)
    return target


def record_session(workdir: Path, step: int, devices: int) -> None:
    """Appends this ``train``'s line to ``WORKDIR/sessions.jsonl``: the step it starts
    from, the code's commit, the machine, the device count and the time. A run resumed
    across versions or machines so lists every commit and machine that trained it."""
    from llama_adv.experiments import provenance

    line = {"step": step, "commit": provenance.git_commit(), "devices": devices,
            "machine": provenance.machine()["summary"],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    with (workdir / SESSIONS_FILE).open("a") as f:
        f.write(json.dumps(line) + "\n")
