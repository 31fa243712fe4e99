"""Where a result came from: the code's git commit and the machine.

Nothing here imports JAX: a sweep's parent process must not take an accelerator away from
the runs it starts (JAX reserves most of a GPU's memory when it initialises).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# Folders whose local changes can change a run's numbers (a "+dirty" commit).
CODE_PATHS = ("llama_adv", "configs", "experiments")


@functools.cache
def git_commit() -> str:
    """The repository's HEAD commit, ``+dirty`` if code or configs have local changes;
    ``"unknown"`` outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # the model name says more than the architecture
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may use, not the host's
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def accelerators() -> list[str]:
    """Accelerators the runs would use, found without initialising JAX: none when
    ``JAX_PLATFORMS`` is ``cpu``; NVIDIA GPUs from ``nvidia-smi -L``; TPUs from
    ``/dev/accel*``."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms and all(p.strip() == "cpu" for p in platforms.split(",")):
        return []
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20
            ).stdout
            gpus = [ln.split(" (UUID")[0].split(": ", 1)[-1] for ln in out.splitlines() if ln]
            if gpus:
                return gpus
    tpus = sorted(Path("/dev").glob("accel*"))
    return [f"TPU ({p.name})" for p in tpus]


@functools.cache
def machine() -> dict[str, Any]:
    """The hardware and software that ran (or reported) the runs, as a JSON-able dict
    with a one-line ``summary``."""
    try:
        jax_version = importlib.metadata.version("jax")
    except importlib.metadata.PackageNotFoundError:
        jax_version = "not installed"
    info: dict[str, Any] = {
        "system": f"{platform.system()} {platform.machine()}",
        "cpu": _cpu_name(),
        "cpu_cores": _cpu_cores(),
        "accelerators": accelerators(),
        "python": platform.python_version(),
        "jax": jax_version,
    }
    devices = ", ".join(info["accelerators"]) or "no accelerator (CPU)"
    info["summary"] = (
        f"{info['cpu']}, {info['cpu_cores']} cores; {devices}; jax {jax_version}, "
        f"python {info['python']}"
    )
    return info
