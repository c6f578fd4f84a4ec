"""The Slurm dev cluster: slurmctld and slurmd of Debian's Slurm 22.05, without systemd, with
qhpc-lab's Prolog, Epilog and TaskProlog and a licence and GRES per QPU (1 or 2)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qhpc_lab.hpc import slurm as slurm_hooks
from qhpc_lab.hpc.devcluster.cluster import QHPC_CLI, Cluster, job_python
from qhpc_lab.hpc.devcluster.errors import DevClusterError
from qhpc_lab.hpc.devcluster.munged import MUNGED
from qhpc_lab.hpc.devcluster.packages import Requirements
from qhpc_lab.hpc.devcluster.processes import run_command, wait_until

SLURM_REQUIREMENTS = Requirements(
    binaries={
        "/usr/sbin/slurmctld": "slurmctld",
        "/usr/sbin/slurmd": "slurmd",
        "/usr/bin/sbatch": "slurm-client",
        "/usr/bin/scontrol": "slurm-client",
        MUNGED: "munge",
    },
    packages=("slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge"),
    companions={"slurmctld": "slurm-wlm", "slurmd": "slurm-wlm"},
)
SERVICES = {
    "munged": MUNGED,
    "qpu": QHPC_CLI,
    "qpu_b": QHPC_CLI,
    "scheduler": QHPC_CLI,
    "scheduler_b": QHPC_CLI,
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
}
"""Start order (stop is the reverse) → a string its command line contains."""


@dataclass
class DevCluster(Cluster):
    """Slurm: slurmctld and slurmd."""

    SERVICES: ClassVar[dict[str, str]] = SERVICES
    directory: Path
    slots: int = 4
    """``qpu:N``: the licence count and the node's GRES count."""
    device: str = "test"
    """The emulated QPU's profile (``qhpc qpu serve --profile``)."""
    scheduler_port: int = 8016
    qpu_port: int = 8096
    """The emulated QPU's QPU API (the second QPU's on the next port)."""
    slurmctld_port: int = 6817
    slurmd_port: int = 6818
    node: str = "localhost"
    licence: str = "qpu"
    python: str = ""
    """A Python with qhpc_lab that every job user can run (set by ``start``)."""
    qpus: int = 1
    """1, or 2: QPUs ``{licence}_a`` and ``{licence}_b``, a licence, GRES and scheduler each
    (the second on ``scheduler_port + 1``, profile ``device_b``)."""
    device_b: str = "demo"
    """The second QPU's emulated profile."""

    @classmethod
    def load(cls, directory: str | Path) -> DevCluster:
        """The cluster described by ``{directory}/cluster.json`` (defaults if none)."""
        state = Path(directory) / "cluster.json"
        values = json.loads(state.read_text()) if state.is_file() else {}
        values["directory"] = Path(directory)
        return cls(**values)

    # -- where things are -----------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.directory / "etc" / "slurm.conf"

    @property
    def resources(self) -> list[str]:
        """The QPUs' names: each is its QRMI resource, Slurm licence and GRES."""
        if self.qpus not in (1, 2):
            raise DevClusterError(f"--qpus {self.qpus}: the dev cluster runs 1 or 2 QPUs")
        if self.qpus == 1:
            return [self.licence]
        return [f"{self.licence}_a", f"{self.licence}_b"]

    def _schedulers(self) -> list[tuple[str, int, str]]:
        services = zip(("scheduler", "scheduler_b"), (self.device, self.device_b), strict=True)
        return [
            (service, self.scheduler_port + i, device)
            for i, (service, device) in enumerate(list(services)[: len(self.resources)])
        ]

    @property
    def scheduler_urls(self) -> dict[str, str]:
        """Each QPU's scheduler, by resource name."""
        return {
            name: f"http://127.0.0.1:{port}"
            for name, (_, port, _) in zip(self.resources, self._schedulers(), strict=True)
        }

    @property
    def hooks_config(self) -> Path:
        return self.directory / "etc" / "qhpc-slurm.toml"

    @property
    def environ(self) -> dict[str, str]:
        """What Slurm's commands need to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    # -- start ----------------------------------------------------------------------------

    ROOT_BECAUSE: ClassVar[str] = (
        "slurmd runs jobs as their users, munged and the Slurm daemons need their system "
        "directories"
    )
    REQUIRES: ClassVar[Requirements] = SLURM_REQUIREMENTS

    def _ports(self) -> tuple[int, ...]:
        schedulers = tuple(port for _, port, _ in self._schedulers())
        qpus = tuple(self._qpu(service)[1] for service, _, _ in self._schedulers())
        return (*schedulers, *qpus, self.slurmctld_port, self.slurmd_port)

    def _prepare(self) -> dict[str, Path]:
        self._layout()
        self.python = job_python(self.directory)
        return self._write_config()

    def _start_daemons(self, scripts: dict[str, Path]) -> None:
        self._start_slurm()

    def _layout(self) -> None:
        for sub, mode in (
            ("", 0o755),
            ("etc", 0o755),
            ("hooks", 0o755),
            ("run", 0o755),
            ("log", 0o755),
            ("slurmctld", 0o700),
            ("slurmd", 0o755),
            ("scheduler", 0o700),
        ):
            path = self.directory / sub
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)

    def _write_config(self) -> dict[str, Path]:
        hooks = slurm_hooks.write_hook_scripts(
            self.directory / "hooks", self.python, str(self.hooks_config)
        )
        qpus = [
            f'scheduler_url = "{url}"\nresource = "{name}"\nlicence = "{name}"\n'
            for name, url in self.scheduler_urls.items()
        ]
        self.hooks_config.write_text(
            "# qhpc-lab Slurm hooks of the dev cluster (keys: qhpc_lab/hpc/slurm.py HookConfig)\n"
            f'run_dir = "{self.run_dir}"\n'
            f'log_file = "{self.hooks_log}"\n'
            + (qpus[0] if self.qpus == 1 else "".join(f"\n[[qpus]]\n{qpu}" for qpu in qpus))
        )
        self.conf.write_text(slurm_conf(self, hooks))
        (self.conf.parent / "gres.conf").write_text(
            "".join(f"NodeName={self.node} Name={n} Count={self.slots}\n" for n in self.resources)
        )
        self._save()
        return hooks

    def _start_slurm(self) -> None:
        """slurmctld and slurmd fork and write their pid files into ``{dir}/run`` themselves
        (slurm.conf names them): the services' own pid files."""
        conf = str(self.conf)
        run_command(
            ["/usr/sbin/slurmctld", "-f", conf], "slurmctld", lambda: self._tail("slurmctld.log")
        )
        run_command(
            ["/usr/sbin/slurmd", "-f", conf, "-N", self.node],
            "slurmd",
            lambda: self._tail("slurmd.log"),
        )

        def idle() -> bool:
            services = self.services
            for service in ("slurmctld", "slurmd"):
                if services.pid(service) is None and services.pid_file(service).exists():
                    raise DevClusterError(f"{service} died:\n{self._tail(service + '.log')}")
            return self.node_state() == "idle"

        wait_until(idle, 60, f"node {self.node} is not idle", lambda: self._tail("slurmctld.log"))

    # -- state ------------------------------------------------------------------------------

    def node_state(self) -> str | None:
        """The node's Slurm state (idle, mixed, allocated, drained...); None if unknown."""
        if shutil.which("sinfo") is None or self.services.pid("slurmctld") is None:
            return None
        done = subprocess.run(
            ["sinfo", "-h", "-n", self.node, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, **self.environ},
        )
        return done.stdout.strip() or None if done.returncode == 0 else None

    def status(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "services": self.services.pids(),
            "node": self.node_state(),
            "scheduler_url": self.scheduler_url,
            "qpus": self.scheduler_urls,
            "slurm_conf": str(self.conf),
            "python": self.python,
        }

    # -- stop -----------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Cancel the cluster's jobs (their Epilogs revoke the sessions), then stop the daemons
        this cluster started, in reverse order; return their names."""
        if self.services.pid("slurmctld") and self.services.pid("slurmd"):
            self._cancel_jobs()
        return self.services.stop()

    def _cancel_jobs(self, timeout: float = 20) -> None:
        env = {**os.environ, **self.environ}

        def jobs() -> list[str]:
            done = subprocess.run(
                ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=10, env=env
            )
            return done.stdout.split()

        pending = jobs()
        if pending:
            subprocess.run(["scancel", *pending], capture_output=True, timeout=10, env=env)
            with contextlib.suppress(DevClusterError):
                wait_until(lambda: not jobs(), timeout, "jobs still running")


def slurm_conf(cluster: DevCluster, hooks: dict[str, Path]) -> str:
    """slurm.conf of the dev cluster: settings that work in a container, the licence, the hooks."""
    d = cluster.directory
    cpus = max(os.cpu_count() or 1, 4)
    shares = ",".join(f"{name}:{cluster.slots}" for name in cluster.resources)
    return f"""\
# Single-node Slurm 22.05 for qhpc-lab, written by `qhpc dev-cluster start`.
ClusterName=qhpc-dev
SlurmctldHost=localhost
SlurmctldPort={cluster.slurmctld_port}
SlurmdPort={cluster.slurmd_port}
SlurmUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation={d}/slurmctld
SlurmdSpoolDir={d}/slurmd
SlurmctldPidFile={cluster.services.pid_file("slurmctld")}
SlurmdPidFile={cluster.services.pid_file("slurmd")}
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ReturnToService=2
KillWait=5
MailProg=/bin/true
# Jobs here mostly wait on the QPU: offer {cpus} CPUs whatever the machine has.
SlurmdParameters=config_overrides

# The QPU share: qpu:N is N slots, as a cluster-wide licence (-L qpu:1) or a GRES (--gres=qpu:1);
# one licence and GRES per QPU.
Licenses={shares}
GresTypes={",".join(cluster.resources)}

# qhpc-lab's hooks: the session opens at allocation (Alloc: for salloc too), every task gets
# the QRMI variables, the session is revoked when the job ends.
{slurm_hooks.configuration(hooks)}

NodeName={cluster.node} NodeHostname=localhost CPUs={cpus} \
Gres={shares} State=UNKNOWN
PartitionName=debug Nodes={cluster.node} Default=YES MaxTime=INFINITE State=UP
"""
