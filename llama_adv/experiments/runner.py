"""Running a sweep: one ``llama-adv train`` process per run, an index of their states.

Each run trains in its own process (fresh JAX state, its own log) in
``runs/<experiment>/<run id>``. The file system is the truth about a run, so a sweep can be
killed at any point and started again:

- a workdir with ``summary.json`` and the same resolved config is finished: skipped;
- a workdir with the same config and checkpoints but no summary was interrupted: the run is
  started again in it and ``train_and_evaluate`` resumes from the latest checkpoint;
- anything else is started from scratch; a run that failed before is tried again.

A failed run is recorded in the index with its error and the sweep goes on. On CPU,
``parallel`` runs share the machine; with an accelerator runs go one after another.

Runs end with their sweep: SIGINT, SIGTERM or SIGHUP to the sweep asks each to save a
checkpoint and stop, and on Linux a run gets SIGINT (``PR_SET_PDEATHSIG``) when its sweep
dies any other way, even by SIGKILL. The index records each running run's process; a reader
that finds a "running" entry whose process has ended (a sweep killed before it could record
the end) takes the run's state from its workdir instead (:func:`settle_stale`).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import datetime
import fcntl
import fnmatch
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from llama_adv.errors import UserError
from llama_adv.experiments import provenance
from llama_adv.experiments.index import (
    DONE,
    FAILED,
    INDEX_FILE,
    INTERRUPTED,
    PENDING,
    RUNNING,
    process_alive,
    process_identity,
    read_index,
    write_index,
)
from llama_adv.experiments.spec import (
    Experiment,
    RunSpec,
    VariantError,
    expand,
    load_experiment,
    variant_error,
)

LOG_FILE = "train.log"  # in each run's workdir: every attempt's stdout and stderr
LOCK_FILE = ".sweep.lock"  # in runs/<name>/: held by a sweep and every run it started
ATTEMPT_HEADER = "=== "  # starts the line the sweep writes before each attempt's output
# What a run's workdir holds before the sweep starts it.
NEW, RESUME, FINISHED, INVALID = "new", "resume", "finished", "invalid"
# Seconds an interrupted run gets to save its checkpoint before it is killed.
GRACE_SEC = 120.0
POLL_SEC = 0.2
LOCK_WAIT_SEC = 1.0  # a reader's probe of the lock (see sweep_active) holds it this briefly


@dataclasses.dataclass
class Planned:
    """A run and what its workdir says about it (``state``: new, resume, finished or
    invalid; ``error`` says why a run is invalid)."""

    run: RunSpec
    workdir: Path
    state: str
    error: str | None = None
    config: dict[str, Any] | None = None  # the resolved config (None if it does not load)


def _matches(run_id: str, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(run_id, pattern)
    return pattern in run_id


def select(runs: list[RunSpec], patterns: str | Sequence[str] | None) -> list[RunSpec]:
    """The runs whose id matches any of ``patterns`` (in the experiment's order), each a
    glob (``*method=fgm*``) if it has ``*?[``, else a substring (``method=fgm``); every run
    if there is no pattern.

    Raises:
      UserError: a pattern that matches no run (a typo would otherwise go unnoticed).
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns or ())
    patterns = [p for p in patterns if p]
    if not patterns:
        return runs
    for pattern in patterns:
        if not any(_matches(r.id, pattern) for r in runs):
            examples = ", ".join(r.id for r in runs[:3])
            raise UserError(f"--only {pattern!r} matches no run; run ids look like: {examples}.")
    return [r for r in runs if any(_matches(r.id, p) for p in patterns)]


def resolve(config: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved config of ``config`` (``configs/x.py[:variant]``) with ``overrides``,
    as JSON data.

    Raises:
      UserError: a bad override, or a variant the config file rejects or cannot use.
    """
    from llama_adv.config import load_config, to_json

    try:
        return json.loads(to_json(load_config(config, overrides)))
    except (TypeError, ValueError) as error:  # the config file could not use its variant
        file, _, variant = config.partition(":")
        if not variant:
            raise
        raise variant_error(f"config {file}", variant, error) from None


def plan_run(run: RunSpec, workdir: Path) -> Planned:
    """Resolves ``run``'s config (a bad value makes it invalid, not the sweep) and
    compares it with what ``workdir`` holds (``config.same_run_config``: entries added
    since it ran, at their behaviour-preserving defaults, do not count)."""
    from llama_adv.config import same_run_config

    try:
        resolved = resolve(run.config, run.overrides)
    except UserError as error:
        return Planned(run, workdir, INVALID, str(error))
    existing = workdir / "config.json"
    if existing.is_file():
        try:
            same = same_run_config(json.loads(existing.read_text()), resolved)
        except json.JSONDecodeError:
            same = False
        if not same:
            # ``llama-adv train`` would refuse this workdir; say why here, without a process.
            return Planned(
                run, workdir, INVALID,
                f"{workdir} holds a run with a different config (the experiment changed "
                "since it ran); delete that folder to run it again.",
                resolved,
            )  # fmt: skip
        if (workdir / "summary.json").is_file():
            return Planned(run, workdir, FINISHED, config=resolved)
        if any((workdir / "checkpoints").glob("*")):
            return Planned(run, workdir, RESUME, config=resolved)
    return Planned(run, workdir, NEW, config=resolved)


def check_configs(exp: Experiment, runs: list[RunSpec]) -> None:
    """Loads each config file (with its variant) the runs use once, before any run: a
    base config that cannot load is the experiment's error, not one per run."""
    for spec in dict.fromkeys(r.config for r in runs):
        try:
            resolve(spec)
        except VariantError as error:
            raise UserError(f"{exp.path}: {error}") from None
        except UserError as error:
            raise UserError(f"{exp.path}: config {spec}: {error}") from None


def _train_args(run: RunSpec, workdir: Path) -> list[str]:
    overrides = [f"--config.{o}" for o in run.overrides]
    return ["train", "--config", run.config, "--workdir", str(workdir), *overrides]


def train_command(run: RunSpec, workdir: Path) -> list[str]:
    """The child process: ``python -m llama_adv train`` with the run's config and overrides."""
    return [sys.executable, "-m", "llama_adv", *_train_args(run, workdir)]


def shell_command(run: RunSpec, workdir: Path) -> str:
    """What a person types to run ``run`` by hand (recorded in the index)."""
    return shlex.join(["llama-adv", *_train_args(run, workdir)])


def _last_attempt_lines(log: Path) -> list[str]:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    # Only this attempt's output: the log holds every attempt, each after a header line.
    starts = [i for i, ln in enumerate(lines) if ln.startswith(ATTEMPT_HEADER)]
    return lines[starts[-1] + 1 :] if starts else lines


def _error_line(lines: list[str]) -> str | None:
    prefix = "llama-adv: error: "
    for line in reversed(lines[-200:]):
        if line.startswith(prefix):
            return line[len(prefix) :]
    return None


def error_from_log(log: Path, returncode: int) -> str:
    """One line saying why a run failed: its ``llama-adv: error:`` line, else the last
    line of output (a traceback's exception), else the exit status."""
    lines = _last_attempt_lines(log)
    error = _error_line(lines)
    if error is not None:
        return error
    if returncode < 0:
        return f"killed by signal {-returncode}"
    last = lines[-1] if lines else "no output"
    return f"{last} (exit status {returncode})"


_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def _now() -> str:
    return time.strftime(_TIME_FORMAT)


def _epoch(text: Any) -> float | None:
    try:
        return datetime.datetime.strptime(text, _TIME_FORMAT).timestamp()
    except (TypeError, ValueError):
        return None


def make_folder(path: Path, what: str) -> None:
    """Creates folder ``path`` (and its parents) or raises UserError saying why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what}: {path} is a file, not a folder.") from None
    except OSError as error:
        raise UserError(f"{what}: cannot create folder {path} ({error.strerror}).") from None


def check_folder(path: Path, what: str) -> None:
    """Raises UserError if ``path`` or one of its parents exists and is not a folder."""
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise UserError(f"{what}: {part} is a file, not a folder.")


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[int]:
    """One sweep per experiment folder at a time: two would train in the same workdirs.

    Yields the lock's file descriptor. Runs inherit it, so a sweep killed outright keeps
    the folder locked until its last run has exited (on Linux runs stop with their sweep);
    the kernel drops an ``flock`` with the last descriptor, so no lock outlives its
    processes. A reader's probe (:func:`sweep_active`) may hold it for an instant, so a
    new sweep tries for up to ``LOCK_WAIT_SEC``.
    """
    make_folder(root, "--runs-dir")
    with open(root / LOCK_FILE, "w") as handle:
        deadline = time.monotonic() + LOCK_WAIT_SEC
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"Another sweep (or a run of a killed one) is running in {root}; wait "
                        "for it to end."
                    ) from None
                time.sleep(0.05)
        try:
            yield handle.fileno()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sweep_active(root: Path) -> bool | None:
    """Whether a sweep, or a run one started, holds ``root``'s lock: False means no
    process of any sweep is running there, so no run can be running; None if it cannot be
    told (no lock file, or one that cannot be opened)."""
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def is_running(entry: dict[str, Any], active: bool | None) -> bool:
    """Whether an index entry's run is really running (``active``: see
    :func:`sweep_active`). An entry whose process cannot be checked (another host, an
    index from before processes were recorded) is believed while the folder is locked."""
    if entry.get("status") != RUNNING or active is False:
        return False
    alive = process_alive(entry)
    return True if alive is None else alive


def settle_stale(entry: dict[str, Any], p: Planned) -> dict[str, Any]:
    """A "running" entry whose process ended unseen (its sweep was killed first), with
    the state its workdir shows: done (a summary), failed (an invalid workdir) or
    interrupted; its wall time counts up to the last write of its log or summary."""
    entry = dict(entry)
    writes = []
    for name in (LOG_FILE, "summary.json"):
        with contextlib.suppress(OSError):
            writes.append((p.workdir / name).stat().st_mtime)
    ended, started = max(writes, default=None), _epoch(entry.get("started"))
    if p.state == FINISHED:
        status, error = DONE, None
    elif p.state == INVALID:
        status, error = FAILED, p.error
    else:
        status = INTERRUPTED
        why = _error_line(_last_attempt_lines(p.workdir / LOG_FILE))
        error = "Its sweep stopped before it, so its exit was not recorded" + (
            f"; it said: {why}" if why else "; run the sweep again to resume it."
        )
    note = "the run's end was not seen by its sweep; status read from its workdir"
    entry.update(status=status, error=error, returncode=None, note=note)
    if ended is not None:
        entry["finished"] = time.strftime(_TIME_FORMAT, time.localtime(ended))
        if started is not None:
            seconds = max(0.0, ended - started)
            entry["last_wall_time_sec"] = round(seconds, 1)
            entry["wall_time_sec"] = round((entry.get("wall_time_sec") or 0.0) + seconds, 1)
    return entry


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler stopping the sweep) and SIGHUP (its terminal closing) take the
    Ctrl-C path: runs save and stop."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


_PR_SET_PDEATHSIG = 1


def die_with_sweep(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child get ``signum`` when the sweep dies, however it
    dies (Linux ``PR_SET_PDEATHSIG``), and SIGINT at its default (so that Python turns
    it into KeyboardInterrupt even when the sweep was started with SIGINT ignored, as
    ``cmd &`` in a script does). None where ``prctl`` does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before any fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    args = (ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signum), *[ctypes.c_ulong(0)] * 3)

    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        prctl(*args)
        if os.getppid() != parent:  # the sweep died before prctl: do not start
            os._exit(1)

    return preexec


class Sweep:
    """The state of one sweep: its planned runs and the index it keeps up to date."""

    def __init__(self, exp: Experiment, root: Path, command: str, out: TextIO):
        self.exp, self.root, self.command, self.out = exp, root, command, out
        self.lock_fd: int | None = None  # inherited by runs (see _lock)
        self.index_path = root / INDEX_FILE
        self.entries: dict[str, dict[str, Any]] = {}

    def say(self, text: str) -> None:
        # Progress only: a closed terminal (SIGHUP) must not stop the bookkeeping.
        with contextlib.suppress(OSError, ValueError):
            print(text, file=self.out, flush=True)

    def load(self, planned: list[Planned], selected: set[str]) -> None:
        """Index entries for every run of the experiment, merged with the previous index:
        what the workdirs show wins over what the index says. Called with the lock held,
        which every run of an earlier sweep held too: no run of the old index is running."""
        old = read_index(self.index_path)["runs"]
        for p in planned:
            entry = dict(old.get(p.run.id, {}))
            if entry.get("status") == RUNNING:
                entry = settle_stale(entry, p)
            entry.update(
                id=p.run.id, levels=dict(p.run.levels), seed=p.run.seed, config=p.run.config,
                overrides=list(p.run.overrides), workdir=p.run.id,
                command=shell_command(p.run, p.workdir),
            )  # fmt: skip
            entry.setdefault("attempts", 0)
            entry.setdefault("wall_time_sec", None)
            if p.state == FINISHED:
                entry.update(status=DONE, error=None)
            # Runs this sweep will start, and entries the workdir contradicts (a "done" run
            # whose summary is gone).
            elif p.run.id in selected or entry.get("status") in (None, DONE, RUNNING):
                status = {INVALID: FAILED, RESUME: INTERRUPTED}.get(p.state, PENDING)
                entry.update(status=status, error=p.error)
            self.entries[p.run.id] = entry

    def save(self) -> None:
        index = {
            "experiment": self.exp.name,
            "file": self.exp.path,
            "command": self.command,
            "updated": _now(),
            "commit": provenance.git_commit(),
            "machine": provenance.machine(),
            "runs": self.entries,
        }
        write_index(self.index_path, index)

    def started(self, p: Planned, pid: int) -> None:
        entry = self.entries[p.run.id]
        entry.pop("note", None)
        entry.update(
            status=RUNNING, started=_now(), finished=None, error=None, returncode=None,
            attempts=entry["attempts"] + 1, commit=provenance.git_commit(),
            machine=provenance.machine()["summary"], log=f"{p.run.id}/{LOG_FILE}",
            sweep_pid=os.getpid(), **process_identity(pid),
        )  # fmt: skip
        self.save()

    def finished(self, p: Planned, returncode: int, seconds: float, interrupted: bool) -> str:
        """Records a finished process; returns the run's new status."""
        entry = self.entries[p.run.id]
        summary = p.workdir / "summary.json"
        if returncode == 0 and summary.is_file():
            status, error = DONE, None
        else:
            status = INTERRUPTED if interrupted else FAILED
            error = error_from_log(p.workdir / LOG_FILE, returncode)
        total = (entry.get("wall_time_sec") or 0.0) + seconds  # over every attempt
        entry.update(
            status=status, error=error, returncode=returncode, finished=_now(),
            last_wall_time_sec=round(seconds, 1), wall_time_sec=round(total, 1),
        )  # fmt: skip
        self.save()
        return status


def _summary_line(workdir: Path) -> str:
    try:
        evaluation = json.loads((workdir / "summary.json").read_text())["eval"]
    except (OSError, ValueError, KeyError):
        return ""
    return " ".join(f"{k}={v:.4f}" for k, v in evaluation.items() if "accuracy" in k or k == "loss")


def prepare_data(planned: list[Planned], root: Path, say: Callable[[str], None]) -> None:
    """Prepares each distinct real dataset once, in its own process, before runs start in
    parallel: concurrent first preparations of one dataset would race on its cache."""
    seen: set[str] = set()
    for p in planned:
        data = p.config["data"]
        key = json.dumps(data, sort_keys=True)
        if data["name"].startswith("synthetic") or key in seen:
            continue
        seen.add(key)
        say(f"preparing data {data['name']} (once, before parallel runs)")
        command = [sys.executable, "-m", "llama_adv.experiments.prepare", "--config",
                   p.run.config, *(f"--config.{o}" for o in p.run.overrides)]  # fmt: skip
        with open(root / "prepare.log", "a") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_sweep(signal.SIGTERM))  # fmt: skip
        if result.returncode:  # the runs will fail with their own message; go on
            say(f"  data preparation failed (see {root / 'prepare.log'}); runs will report it")


def run_sweep(
    spec: str,
    *,
    runs_dir: str | Path = "runs",
    parallel: int = 1,
    dry_run: bool = False,
    only: str | Sequence[str] | None = None,
    command: str = "",
    out: TextIO | None = None,
) -> dict[str, int]:
    """Runs (or resumes) every run of the experiment file ``spec``.

    Args:
      spec: ``experiments/<name>.py[:arg]``.
      runs_dir: runs go to ``<runs_dir>/<experiment name>/<run id>``.
      parallel: runs at the same time on CPU (1 with an accelerator).
      dry_run: print the plan (each run's state and command) and change nothing.
      only: run only the runs whose id matches one of these patterns (see :func:`select`).
      command: the command line, recorded in the index.
      out: where progress lines go (default stdout).

    Returns:
      Counts by outcome: ``done`` (finished now), ``skipped`` (finished before),
      ``failed``; for a dry run ``planned`` and ``running`` (by another sweep) too.

    Raises:
      UserError: a bad experiment file or argument, another sweep holding the folder,
        Ctrl-C (runs save a checkpoint first), or runs that failed (after all others ran).
    """
    out = out or sys.stdout
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise UserError(f"--parallel must be a whole number of at least 1, got {parallel!r}.")
    check_folder(Path(runs_dir), "--runs-dir")
    exp = load_experiment(spec)
    runs = expand(exp)
    selected = {r.id for r in select(runs, only)}
    check_configs(exp, runs)
    root = Path(runs_dir) / exp.name
    planned = [plan_run(r, root / r.id) for r in runs]
    todo = [p for p in planned if p.run.id in selected and p.state in (NEW, RESUME)]
    invalid = [p for p in planned if p.run.id in selected and p.state == INVALID]
    skipped = [p for p in planned if p.run.id in selected and p.state == FINISHED]
    gpus = provenance.accelerators()
    if parallel > 1 and gpus:
        print(f"{gpus[0]} found: runs go one after another.", file=out)
        parallel = 1

    if dry_run:
        # Runs another sweep is running now (a "running" entry whose process has ended is
        # shown by its workdir, like every other run).
        entries, active = read_index(root / INDEX_FILE)["runs"], sweep_active(root)
        running = {p.run.id for p in todo if is_running(entries.get(p.run.id, {}), active)}
        todo = [p for p in todo if p.run.id not in running]
        for p in planned:
            if p.run.id in running:
                e = entries[p.run.id]
                print(f"running  {p.run.id}", file=out)
                print(f"         by another sweep since {e.get('started')} (pid {e.get('pid')} "
                      f"on {e.get('host')})", file=out)  # fmt: skip
            elif p.run.id in selected:
                what = {NEW: "run", RESUME: "resume", FINISHED: "skip", INVALID: "invalid"}
                print(f"{what[p.state]:8s} {p.run.id}", file=out)
                print(f"         {p.error or shell_command(p.run, p.workdir)}", file=out)
        print(
            f"{exp.name}: {len(todo)} to run, {len(running)} running, {len(skipped)} finished, "
            f"{len(invalid)} invalid; runs in {root}, {parallel} at a time",
            file=out,
        )
        return {"planned": len(todo), "running": len(running), "skipped": len(skipped),
                "failed": len(invalid)}  # fmt: skip

    sweep = Sweep(exp, root, command, out)
    with _lock(root) as sweep.lock_fd, _signals_as_interrupt():
        sweep.load(planned, selected)
        sweep.save()
        for p in invalid:
            sweep.say(f"failed   {p.run.id}: {p.error}")
        sweep.say(
            f"{exp.name}: {len(todo)} to run ({sum(p.state == RESUME for p in todo)} resumed), "
            f"{len(skipped)} finished before, {len(invalid)} invalid; {parallel} at a time"
        )
        if parallel > 1 and len(todo) > 1:
            prepare_data(todo, root, sweep.say)
        counts = _execute(sweep, todo, parallel)
    failed = [e for i, e in sweep.entries.items() if i in selected and e["status"] == FAILED]
    sweep.say(
        f"{exp.name}: {counts['done']} done now, {len(skipped)} finished before, "
        f"{len(failed)} failed; index {sweep.index_path}"
    )
    if failed:
        listed = "; ".join(f"{e['id']}: {str(e['error']).rstrip('.')}" for e in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise UserError(
            f"{len(failed)} of {len(selected)} runs failed: {listed}{more}. See {sweep.index_path}."
        )
    return {"done": counts["done"], "skipped": len(skipped), "failed": 0}


def _execute(sweep: Sweep, todo: list[Planned], parallel: int) -> dict[str, int]:
    """Starts up to ``parallel`` runs at a time until all have ended; records each."""
    queue = collections.deque(todo)
    active: dict[subprocess.Popen, tuple[Planned, float, TextIO]] = {}
    counts = {"done": 0, "failed": 0}
    total, number = len(todo), 0
    preexec = die_with_sweep(signal.SIGINT)  # a run saves a checkpoint, as on Ctrl-C
    try:
        while queue or active:
            while queue and len(active) < parallel:
                p = queue.popleft()
                number += 1
                p.workdir.mkdir(parents=True, exist_ok=True)
                log = open(p.workdir / LOG_FILE, "a")  # noqa: SIM115 (closed when it ends)
                log.write(f"\n{ATTEMPT_HEADER}{_now()} llama-adv sweep: {sweep.command}\n")
                log.flush()
                # Its own session: Ctrl-C in the terminal reaches only the sweep, which then
                # passes exactly one SIGINT on (a second one would cut the checkpoint save).
                proc = subprocess.Popen(
                    train_command(p.run, p.workdir), stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                    pass_fds=(sweep.lock_fd,) if sweep.lock_fd is not None else (),
                    preexec_fn=preexec,
                )  # fmt: skip
                active[proc] = (p, time.time(), log)
                sweep.started(p, proc.pid)
                verb = "resuming" if p.state == RESUME else "started"
                sweep.say(f"[{number}/{total}] {verb} {p.run.id}")
            for proc in [q for q in active if q.poll() is not None]:
                p, start, log = active.pop(proc)
                log.close()
                status = sweep.finished(p, proc.returncode, time.time() - start, False)
                counts["done" if status == DONE else "failed"] += 1
                entry = sweep.entries[p.run.id]
                detail = _summary_line(p.workdir) if status == DONE else entry["error"]
                sweep.say(f"{status:8s} {p.run.id} ({entry['last_wall_time_sec']:.0f} s): {detail}")
            time.sleep(POLL_SEC if active else 0)
    except KeyboardInterrupt:
        _interrupt(sweep, active)
        raise UserError(
            f"Sweep interrupted; {len(active)} running run(s) saved a checkpoint. Run the same "
            "command again to resume."
        ) from None
    except BaseException:  # the sweep fails (a full disk?): stop and record runs first
        with contextlib.suppress(Exception):
            _interrupt(sweep, active)
        raise
    return counts


def _interrupt(sweep: Sweep, active: dict) -> None:
    """Asks every running run to stop (SIGINT: it saves a checkpoint), waits, records."""
    for proc in active:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
    sweep.say("interrupting: running runs save a checkpoint and stop ...")
    deadline = time.time() + GRACE_SEC
    for proc, (p, start, log) in active.items():
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        sweep.finished(p, proc.returncode, time.time() - start, True)
