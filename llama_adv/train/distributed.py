"""Multi-process (multi-host) runs: starting ``jax.distributed`` and keeping the
processes of one run in step.

A run of ``N`` processes is ``N`` copies of the same ``llama-adv train`` command, each
with its ``--process-id`` (or started by a cluster manager JAX recognises: SLURM, Open
MPI, a Cloud TPU pod, Kubernetes). Every process feeds its own shard of each global
batch (:mod:`llama_adv.data.pipeline`) and takes part in every checkpoint save and
restore; only process 0 (:func:`is_main`) holds the workdir lock, creates the workdir
and writes ``config.json``, ``metrics.jsonl``, TensorBoard events and ``summary.json``.

Errors. Bad flags are refused before anything starts. With explicit flags the processes
first meet at the coordinator's port (:func:`_rendezvous`) before JAX's own service
starts there, because JAX aborts the whole process (a fatal C++ log line, no Python
exception) when its service cannot be reached in time; the rendezvous gives one line and
exit status 2 instead, in every process. After initialisation, steps that may fail in
one process only (workdir checks, the lock) run inside :func:`together`, which hands the
first failure to every process, so all stop with the same message. A process that dies
outright (killed, out of memory) is noticed by JAX's coordination service within
:data:`HEARTBEAT_TIMEOUT_S`, which then terminates the others rather than leaving them
waiting in a collective forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import time
import warnings
from collections.abc import Iterator
from typing import Any

from llama_adv.errors import UserError

# A process silent this long is taken for dead and the other processes are stopped. Long
# enough for a busy host (heartbeats come from a background thread, so slow steps do not
# count), short enough that a crashed run frees its machines within about a minute.
HEARTBEAT_TIMEOUT_S = 60
# How long a process that ends waits for the others to end too (JAX's shutdown barrier);
# the processes of a run end within seconds of each other (the last checkpoint and
# evaluation are collective), so a minute only matters when one has died.
SHUTDOWN_TIMEOUT_S = 60
DEFAULT_INIT_TIMEOUT_S = 60
MESSAGE_BYTES = 4096  # the longest error message :func:`together` hands on


@dataclasses.dataclass(frozen=True)
class Processes:
    """How this process joins a run: ``coordinator`` is ``None`` for a single-process run
    or one whose cluster manager JAX detects (``cluster`` names it)."""

    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0
    init_timeout: int = DEFAULT_INIT_TIMEOUT_S
    cluster: str | None = None


def parse_options(
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
    init_timeout: float = DEFAULT_INIT_TIMEOUT_S,
) -> Processes:
    """Checks the ``train`` flags ``--coordinator``, ``--num-processes``,
    ``--process-id`` and ``--init-timeout``; without the first three, looks for a cluster
    manager JAX can initialise from. Starts nothing.

    Raises:
      UserError: a flag missing, malformed or out of range.
    """
    if not init_timeout > 0:
        raise UserError(f"--init-timeout {init_timeout:g} must be a positive number of seconds.")
    timeout = max(1, round(init_timeout))
    given = {"--coordinator": coordinator, "--num-processes": num_processes,
             "--process-id": process_id}  # fmt: skip
    if all(v is None for v in given.values()):
        cluster = detect_cluster()
        return Processes(init_timeout=timeout, cluster=cluster, num_processes=0 if cluster else 1)
    missing = [flag for flag, value in given.items() if value is None]
    if missing:
        raise UserError(
            f"{', '.join(missing)} missing: a multi-process run needs all of --coordinator "
            "HOST:PORT, --num-processes N and --process-id I (0 to N-1), the same HOST:PORT "
            "and N in every process."
        )
    assert coordinator is not None and num_processes is not None and process_id is not None
    _split_address(coordinator)
    if num_processes < 1:
        raise UserError(f"--num-processes {num_processes} must be at least 1.")
    if not 0 <= process_id < num_processes:
        raise UserError(
            f"--process-id {process_id} is out of range for --num-processes {num_processes}; "
            f"give each process a different id from 0 to {num_processes - 1}."
        )
    return Processes(coordinator, num_processes, process_id, timeout)


def _split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); raises UserError."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(
            f"--coordinator {address!r} is not HOST:PORT; pass process 0's host name or IP "
            "address and a free port, e.g. --coordinator 10.0.0.1:1234."
        )
    return host, int(port)


def detect_cluster() -> str | None:
    """The name of the cluster manager JAX's ``jax.distributed.initialize()`` would take
    its settings from (SLURM, Open MPI, Cloud TPU, Kubernetes), when it runs more than one
    process; None otherwise (a plain single-process run)."""
    from jax._src import clusters  # the registry jax.distributed.initialize() consults

    for env in clusters.ClusterEnv._cluster_types:
        # Opt-in methods (mpi4py) are only used when asked for by name, as in JAX.
        if env.opt_in_only_method:
            continue
        try:
            # Quiet: a single pod on Kubernetes without the `kubernetes` package warns on
            # every call, and it is a single-process run.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if env.is_env_present() and env.get_process_count() > 1:
                    return env.__name__
        except Exception:  # a half-set environment (or no API access): not a cluster run
            continue
    return None


def initialize(processes: Processes) -> None:
    """Starts ``jax.distributed`` for a multi-process run (nothing for a single one). Must
    come before any JAX computation.

    Raises:
      UserError: the processes did not all reach the coordinator within the timeout, or
        disagree on the number of processes.
    """
    import jax

    if processes.coordinator is None and processes.cluster is None:
        return
    # CPU processes need an explicit cross-process collective implementation (gloo ships
    # with jaxlib; "mpi" needs an MPI library). GPU and TPU runs ignore this setting.
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeouts = dict(initialization_timeout=processes.init_timeout,
                    heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
                    shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)  # fmt: skip
    if processes.coordinator is None:  # the cluster manager says where and who
        jax.distributed.initialize(**timeouts)
        return
    _rendezvous(processes)
    jax.distributed.initialize(
        coordinator_address=processes.coordinator,
        num_processes=processes.num_processes,
        process_id=processes.process_id,
        **timeouts,
    )


def _rendezvous(processes: Processes) -> None:
    """Process 0 listens on the coordinator's port until every other process has said
    hello (its id and the process count it was given), then answers each and closes the
    port for JAX's service to take. Raises UserError where JAX would abort the process."""
    host, port = _split_address(processes.coordinator or "")
    deadline = time.monotonic() + processes.init_timeout
    where = f"--coordinator {processes.coordinator}"
    if processes.process_id != 0:
        _join(host, port, processes, deadline, where)
        return
    listener = _listen(port, where)
    peers: dict[int, socket.socket] = {}
    try:
        while len(peers) < processes.num_processes - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(1, processes.num_processes)) - peers.keys())
                message = (
                    f"only {len(peers) + 1} of {processes.num_processes} processes reached "
                    f"{where} within --init-timeout {processes.init_timeout} s (missing "
                    f"--process-id {', '.join(map(str, missing))}); start every process, "
                    "or raise --init-timeout."
                )
                _answer(peers.values(), message)
                raise UserError(message)
            listener.settimeout(min(left, 1.0))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(max(deadline - time.monotonic(), 1.0))
            try:
                hello = json.loads(conn.makefile().readline())
                peer, count = int(hello["process_id"]), int(hello["num_processes"])
            except (OSError, ValueError, KeyError, TypeError):
                conn.close()  # not one of ours (a port scanner, a stale client)
                continue
            problem = None
            if count != processes.num_processes:
                problem = (f"--process-id {peer} was started with --num-processes {count} "
                           f"but process 0 with {processes.num_processes}; give every "
                           "process the same --num-processes.")  # fmt: skip
            elif peer in peers or not 0 < peer < processes.num_processes:
                problem = (f"two processes were started with --process-id {peer}; give "
                           f"each process a different id from 0 to "
                           f"{processes.num_processes - 1}.")  # fmt: skip
            if problem:
                _answer([conn, *peers.values()], problem)
                raise UserError(problem)
            peers[peer] = conn
        _answer(peers.values(), "")
    finally:
        for conn in peers.values():
            conn.close()
        listener.close()


def _listen(port: int, where: str) -> socket.socket:
    """A listening socket on ``port`` of every interface, as JAX's service binds."""
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            listener = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this host
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind((address, port))
            listener.listen()
            return listener
        except OSError as error:
            listener.close()
            if family == socket.AF_INET6 and error.errno != 98:  # not "in use": try IPv4
                continue
            raise UserError(
                f"process 0 cannot listen on port {port} of {where} ({error.strerror}); "
                "pick a free port."
            ) from None
    raise UserError(f"process 0 cannot listen on port {port} of {where}.")


def _join(host: str, port: int, processes: Processes, deadline: float, where: str) -> None:
    """A process other than 0: says hello to process 0 and waits for its answer."""
    hello = json.dumps({"process_id": processes.process_id,
                        "num_processes": processes.num_processes}) + "\n"  # fmt: skip
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise UserError(
                f"the coordinator {where} cannot be reached within --init-timeout "
                f"{processes.init_timeout} s; start process 0 (--process-id 0) there, check "
                "HOST:PORT (process 0's address) and the firewall, or raise --init-timeout."
            )
        try:
            conn = socket.create_connection((host, port), timeout=min(left, 5.0))
        except OSError:  # nobody listening yet: process 0 may start later
            time.sleep(min(0.2, max(left, 0)))
            continue
        with conn:
            try:
                conn.sendall(hello.encode())
                conn.settimeout(max(deadline - time.monotonic(), 0.1))
                answer = conn.makefile().readline()
            except OSError:
                answer = None
        if answer is None or not answer.endswith("\n"):
            time.sleep(0.2)  # a listener that is not process 0's, or it went away: retry
            continue
        if answer.strip():
            raise UserError(answer.strip())
        return


def _answer(conns, message: str) -> None:
    for conn in conns:
        with contextlib.suppress(OSError):
            conn.sendall((message.replace("\n", " ") + "\n").encode())


def is_main() -> bool:
    """Whether this is process 0, the one that writes the run's files."""
    import jax

    return jax.process_index() == 0


@contextlib.contextmanager
def together() -> Iterator[None]:
    """Runs the body in every process; when it fails in any, every process fails with the
    first failure's message (a UserError; the failing process re-raises its own error).

    The end of the body is a barrier: in a multi-process run no process leaves it before
    all have finished it. Nothing happens in a single-process run.
    """
    import jax

    if jax.process_count() == 1:
        yield
        return
    failure: BaseException | None = None
    try:
        yield
    except Exception as error:  # handed on, then raised again below
        failure = error
    text = "" if failure is None else str(failure) or type(failure).__name__
    first = _first_message(text)
    if failure is not None:
        raise failure
    if first is not None:
        raise UserError(first)


def _first_message(text: str) -> str | None:
    """Every process's ``text`` gathered (a collective); the first non-empty one, named
    by its process unless it is process 0's, or None."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    raw = text.encode()[:MESSAGE_BYTES]
    buffer = np.zeros(MESSAGE_BYTES + 1, np.uint8)
    buffer[0] = 1 if text else 0
    buffer[1 : 1 + len(raw)] = np.frombuffer(raw, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(buffer))
    for process, row in enumerate(gathered.reshape(jax.process_count(), -1)):
        if row[0]:
            message = bytes(row[1:]).rstrip(b"\0").decode(errors="replace")
            return message if process == 0 else f"(process {process}) {message}"
    return None


def broadcast(value: Any) -> Any:
    """Process 0's JSON-able ``value``, in every process (a collective)."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return value
    raw = json.dumps(value).encode() if jax.process_index() == 0 else b""
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(raw))))
    buffer = np.zeros(size, np.uint8)
    buffer[: len(raw)] = np.frombuffer(raw, np.uint8)
    return json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode())


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name``."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def check_devices(num_devices: int) -> None:
    """A multi-process run trains on every device of every process (each process feeds
    its devices' shard); raises UserError for a ``train.num_devices`` that leaves some out."""
    import jax

    if jax.process_count() > 1 and num_devices not in (0, jax.device_count()):
        raise UserError(
            f"train.num_devices={num_devices}, but a run of {jax.process_count()} processes "
            f"uses all {jax.device_count()} devices; set train.num_devices=0."
        )
