"""The daemons a dev cluster starts: spawned or adopted, recorded, waited on, stopped by pid.

A cluster's daemons outlive the ``qhpc dev-cluster start`` that started them, so each has a pid
file under the cluster's ``run`` folder (Slurm's daemons write theirs there themselves); psutil
starts, reads and signals the processes (a ``psutil.Process`` refuses to signal a pid that was
reused meanwhile). A pid counts as the service's only while its process runs (not a zombie) and
its command line contains the service's marker: a recycled pid that now belongs to another
program is never signalled, and a munged or Slurm that was there before the cluster is left
alone.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from qhpc_lab.hpc.devcluster.errors import DevClusterError


class Services:
    """The daemons of one cluster, by service name, each with its pid file."""

    def __init__(self, run_dir: Path, markers: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.markers = markers
        """Start order (stop is the reverse) → a string its command line contains."""

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    def process(self, service: str) -> psutil.Process | None:
        """The process of ``service`` if this cluster started it and it still runs."""
        try:
            pid = int(self.pid_file(service).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return running_process(pid, self.markers[service])

    def pid(self, service: str) -> int | None:
        process = self.process(service)
        return process.pid if process else None

    def pids(self) -> dict[str, int | None]:
        """Every service's pid, None where it does not run."""
        return {service: self.pid(service) for service in self.markers}

    def spawn(
        self, service: str, command: list[str], log: Path, env: dict[str, str] | None = None
    ) -> psutil.Popen:
        """Start ``command`` in a session of its own, its output appended to ``log``."""
        with log.open("ab") as output:
            process = psutil.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.record(service, process.pid)
        return process

    def record(self, service: str, pid: int) -> None:
        self.pid_file(service).write_text(str(pid))

    def adopt(self, service: str, daemon_pid_file: Path, timeout: float = 30) -> None:
        """A daemon that forks writes its own pid file: wait for it, record its pid as ours."""
        wait_until(daemon_pid_file.exists, timeout, f"{service} wrote no pid file")
        self.record(service, int(daemon_pid_file.read_text().strip()))

    def stop(self) -> list[str]:
        """Stop the recorded daemons that still run, in reverse start order; their names."""
        stopped = []
        for service in reversed(self.markers):
            pid_file = self.pid_file(service)
            if not pid_file.exists():
                continue
            process = self.process(service)
            if process is not None:
                terminate(process, self.markers[service])
                stopped.append(service)
            pid_file.unlink(missing_ok=True)
        return stopped


def running_process(pid: int, marker: str) -> psutil.Process | None:
    """The process ``pid`` if it runs (not a zombie) and its command line contains ``marker``."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        if marker not in "\0".join(process.cmdline()):
            return None
    except psutil.Error:
        return None
    return process


def running(pid: int, marker: str) -> bool:
    return running_process(pid, marker) is not None


def terminate(process: psutil.Process, marker: str, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it still runs after ``timeout``; a zombie counts as gone (its
    parent, often init, reaps it)."""
    for send in (process.terminate, process.kill):
        with contextlib.suppress(psutil.NoSuchProcess):
            send()
        with contextlib.suppress(DevClusterError):
            wait_until(
                lambda: not running(process.pid, marker), timeout, "still running", interval=0.05
            )
            return


def wait_until(
    ready: Callable[[], object],
    timeout: float,
    failure: str,
    details: Callable[[], str] | None = None,
    interval: float = 0.2,
) -> None:
    """Poll ``ready`` every ``interval`` seconds until it holds; DevClusterError naming
    ``failure`` (and ``details``) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            more = f":\n{details()}" if details else ""
            raise DevClusterError(f"{failure} after {timeout:g} s{more}")
        time.sleep(interval)


def run_command(
    command: list[str],
    what: str,
    details: Callable[[], str] | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run a command that must succeed within a minute (a daemon that forks, a setup tool)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DevClusterError(f"{what} did not start: {err}") from None
    if done.returncode:
        more = f"\n{details()}" if details else ""
        raise DevClusterError(
            f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}{more}"
        )


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` of 127.0.0.1."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
