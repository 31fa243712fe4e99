"""Helpers of the workdir-reliability tests: the run they train, readers of
``metrics.jsonl`` and ``llama-adv train`` in a child process with test hooks."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The run every test here trains (or resumes): 8 steps logged one by one, checkpoints at
# steps 4 and 8, a one-step evaluation attack.
OVERRIDES = ("train.num_steps=8", "train.log_every=1", "eval.attack.steps=1")

# Imported by the child's interpreter before `python -m llama_adv` runs (PYTHONPATH):
# four CPU devices like the tests, and the action LLAMA_ADV_TEST_HOOK names at a batch.
SITECUSTOMIZE = """
import os
hook = os.environ.get("LLAMA_ADV_TEST_HOOK")
if hook:
    import signal, time
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    from llama_adv.data import pipeline
    action, at, *wait_for = hook.split(":")
    original = pipeline.TrainStream.batch

    def batch(self, position):
        if position == int(at):
            workdir = os.environ["LLAMA_ADV_TEST_WORKDIR"]
            if action == "kill":  # dies while writing a metrics line
                for step in wait_for:  # once the (asynchronous) save of that step is done
                    while not os.path.isdir(os.path.join(workdir, "checkpoints", step)):
                        time.sleep(0.05)
                with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
                    f.write('{"step": %d, "kind": "tr' % (position + 1))
                os.kill(os.getpid(), signal.SIGKILL)
            if action == "block":  # says so, then waits for the test's signal
                open(os.path.join(workdir, "blocked"), "w").close()
                time.sleep(600)
        return original(self, position)

    pipeline.TrainStream.batch = batch
"""


def load(*overrides: str):
    from llama_adv.config import load_config

    return load_config(f"{REPO / 'configs' / 'quickstart.py'}:tiny", [*OVERRIDES, *overrides])


def rows(workdir: Path) -> list[dict]:
    """Every line of ``metrics.jsonl``, parsed (a partial line fails the test)."""
    return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def keys(workdir: Path) -> list[tuple[int, str]]:
    return [(r["step"], r["kind"]) for r in rows(workdir)]


def losses(workdir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in rows(workdir) if r["kind"] == "train"}


def each_step_once(steps=range(1, 9), last=8) -> list[tuple[int, str]]:
    return [(s, "train") for s in steps] + [(last, "eval")]


class Child:
    """``python -m llama_adv train`` on ``workdir`` with a test hook at the batch of
    position N: ``kill:N[:S]`` (SIGKILL itself amid a metrics line, once checkpoint S is
    on disk) or ``block:N`` (wait for the test's signal)."""

    def __init__(self, tmp_path: Path, workdir: Path, hook: str, *overrides: str):
        (tmp_path / "hooks").mkdir(exist_ok=True)
        (tmp_path / "hooks" / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
        env = {**os.environ, "PYTHONPATH": str(tmp_path / "hooks"), "JAX_PLATFORMS": "cpu",
               "LLAMA_ADV_TEST_HOOK": hook, "LLAMA_ADV_TEST_WORKDIR": str(workdir)}  # fmt: skip
        workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "llama_adv", "train", "--workdir", str(workdir),
                   "--config", f"{REPO / 'configs' / 'quickstart.py'}:tiny",
                   *(f"--config.{o}" for o in (*OVERRIDES, *overrides))]  # fmt: skip
        self.workdir = workdir
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip

    def wait_blocked(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while not (self.workdir / "blocked").exists():
            if self.proc.poll() is not None:
                pytest.fail(f"child ended early: {self.proc.communicate()}")
            if time.time() > deadline:
                self.proc.kill()
                pytest.fail("child did not reach its hook")
            time.sleep(0.2)

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err
