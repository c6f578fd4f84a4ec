"""A user's kernel on a dev cluster, driving the cluster emulator target.

The tests run the client as a real unprivileged user (``runuser``), as a kernel on a login
node would: each call is a fresh process (so a later call is a kernel after a restart), reads
the user's targets file and answers in JSON lines; what the client announced is on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.clusters import User, run_as

DRIVER = '''\
"""A user's kernel: one client call on the cluster emulator target, in JSON lines."""
import json
import sys

from qhpc_lab.client import Client, ClientError


def described(job, result=None):
    state = job.state
    return {
        "id": state.id, "target": job.target, "status": state.status, "detail": state.detail,
        "error": state.error, "engine": state.engine, "approximation": state.approximation,
        "counts": state.counts, "text": str(job), "result": None if result is None else str(result),
    }


command, *args = sys.argv[1:]
try:
    client = Client()
    if command == "submit":  # PROGRAM TARGET|- [wait]
        from qhpc_lab.programs import Program

        program = Program.from_json(open(args[0]).read())
        job = client.submit(program, target=None if args[1] == "-" else args[1])
        print(json.dumps(described(job)), flush=True)
        if args[2:] == ["wait"]:
            print(json.dumps(described(job, job.result())), flush=True)
    elif command in ("state", "wait", "cancel"):  # ID TARGET
        job = client.job(args[0], args[1])
        if command == "wait":
            job.wait()
        elif command == "cancel":
            job.cancel()
        print(json.dumps(described(job)), flush=True)
    elif command == "jobs":  # TARGET
        for job in client.jobs(all=True, target=args[0]):
            print(json.dumps(described(job)), flush=True)
except (ClientError, ValueError) as err:
    print(json.dumps({"refused": str(err), "type": type(err).__name__}), flush=True)
    sys.exit(3)
'''


@dataclass(frozen=True)
class Answer:
    lines: list[dict[str, Any]]
    stderr: str
    """What the client announced (``qhpc: ...`` lines)."""

    @property
    def last(self) -> dict[str, Any]:
        assert self.lines, self.stderr
        return self.lines[-1]


@dataclass
class Kernel:
    """The user's kernel side: their targets file, the driver, a folder of programs."""

    cluster: Any
    user: User
    driver: Path
    programs: Path
    targets_file: Path

    def call(self, *args: str, timeout: float = 300) -> Answer:
        done = run_as(
            self.cluster,
            self.user,
            self.cluster.python,
            str(self.driver),
            *args,
            env={"QHPC_TARGETS_FILE": str(self.targets_file)},
            timeout=timeout,
        )
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert done.returncode in (0, 3), done.stdout + done.stderr
        return Answer(lines, done.stderr)

    def program(self, name: str, envelope: dict[str, Any]) -> str:
        """``envelope`` written where the user can read it; its path."""
        path = self.programs / f"{name}.json"
        path.write_text(json.dumps(envelope))
        path.chmod(0o644)
        return str(path)

    @property
    def ledger(self) -> Path:
        return self.user.home / ".local" / "share" / "qhpc" / "batch"

    def outputs(self) -> str:
        """Every batch job's output in the ledger: what a failed assertion shows."""
        found = sorted(self.ledger.glob("*/output.txt")) if self.ledger.is_dir() else []
        return "\n".join(f"--- {path}\n{path.read_text(errors='replace')}" for path in found)

    def folders(self) -> list[str]:
        return sorted(p.name for p in self.ledger.iterdir()) if self.ledger.is_dir() else []


def user_kernel(cluster: Any, user: User, targets: str) -> Kernel:
    """The user's kernel on ``cluster`` with the targets file ``targets`` in their home."""
    folder = cluster.directory / "emulations"
    folder.mkdir(mode=0o755, exist_ok=True)
    driver = folder / "kernel.py"
    driver.write_text(DRIVER)
    driver.chmod(0o644)
    targets_file = user.home / "targets.toml"
    targets_file.write_text(targets)
    os.chown(targets_file, user.uid, user.uid)
    return Kernel(cluster, user, driver, folder, targets_file)


def chain(atoms: int, duration: int, shots: int, spacing: float = 7.0) -> dict[str, Any]:
    """A Program envelope: a 1D chain of ``atoms`` on Pulser's MockDevice (no register or
    radial limits), one global pulse of ``duration`` ns."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import MockDevice

    register = Register.from_coordinates(
        [(i * spacing, 0.0) for i in range(atoms)], prefix="q", center=True
    )
    sequence = Sequence(register, MockDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(duration, 2.0, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return {"format": "pulser", "body": sequence.to_abstract_repr(), "shots": shots}


def squeue(cluster: Any, user: User) -> list[str]:
    """The user's batch jobs Slurm still lists."""
    done = subprocess.run(
        ["squeue", "-h", "-u", user.name, "-o", "%i"],
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, **cluster.environ},
    )
    return done.stdout.split()
