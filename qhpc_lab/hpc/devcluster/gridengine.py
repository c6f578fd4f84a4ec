"""The Grid Engine dev cluster: sge_qmaster and sge_execd of Debian's 8.1.9 with a private
SGE_ROOT, qhpc-lab's queue prolog, epilog and load sensor and the ``qpu`` consumable."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qhpc_lab.hpc import gridengine as gridengine_hooks
from qhpc_lab.hpc.devcluster.cluster import QHPC_CLI, Cluster, job_python
from qhpc_lab.hpc.devcluster.errors import DevClusterError
from qhpc_lab.hpc.devcluster.munged import MUNGED
from qhpc_lab.hpc.devcluster.packages import Requirements
from qhpc_lab.hpc.devcluster.processes import run_command, wait_until

GRIDENGINE_REQUIREMENTS = Requirements(
    binaries={
        "/usr/sbin/sge_qmaster": "gridengine-master",
        "/usr/sbin/sge_execd": "gridengine-exec",
        "/usr/bin/qsub": "gridengine-client",
        MUNGED: "munge",
    },
    packages=("gridengine-master", "gridengine-exec", "gridengine-client", "munge"),
    # Debian's packages must not set up their own cluster: the dev cluster has its own SGE_ROOT.
    preseed="""\
gridengine-common shared/gridengineconfig boolean false
gridengine-master shared/gridengineconfig boolean false
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string localhost
""",
    preseeded=("gridengine-master", "gridengine-exec", "gridengine-client"),
)
SERVICES = {
    "munged": MUNGED,
    "qpu": QHPC_CLI,
    "qpu_b": QHPC_CLI,
    "scheduler": QHPC_CLI,
    "sge_qmaster": "sge_qmaster",
    "sge_execd": "sge_execd",
}
"""Start order (stop is the reverse) → a string its command line contains."""
SGE_LIB = Path("/usr/lib/gridengine")
"""Debian's Grid Engine programs (qconf, spoolinit, ...) and daemons."""
SGE_SHARE = Path("/var/lib/gridengine")
"""Debian's SGE_ROOT skeleton: bin/, lib/, util/, utilbin/ (the dev cluster links to them)."""


@dataclass
class GridEngineCluster(Cluster):
    """Grid Engine: sge_qmaster and sge_execd of Debian's 8.1.9, with a private SGE_ROOT
    (``{dir}/sge``, rebuilt on each start) whose programs are Debian's, on its own ports."""

    SERVICES: ClassVar[dict[str, str]] = SERVICES
    directory: Path
    slots: int = 4
    """The ``qpu`` consumable's capacity on the global host."""
    device: str = "test"
    scheduler_port: int = 8017
    qpu_port: int = 8098
    """The emulated QPU's QPU API (``qhpc qpu serve``)."""
    qmaster_port: int = 6444
    execd_port: int = 6445
    queue: str = "qpu.q"
    complex: str = "qpu"
    load_report_s: int = 2
    """How often execd asks the load sensor (Grid Engine's default is 40 s)."""
    python: str = ""
    scheduler: str = "gridengine"

    # -- where things are -----------------------------------------------------------------

    @property
    def sge_root(self) -> Path:
        return self.directory / "sge"

    @property
    def hooks_config(self) -> Path:
        return self.directory / "etc" / "qhpc-gridengine.toml"

    @property
    def accounting_file(self) -> Path:
        """The epilog's per-job QPU usage (``qhpc gridengine usage``)."""
        return self.directory / "log" / "qpu-usage.jsonl"

    @property
    def environ(self) -> dict[str, str]:
        """What Grid Engine's commands need to talk to this cluster."""
        return {
            "SGE_ROOT": str(self.sge_root),
            "SGE_CELL": "default",
            "SGE_QMASTER_PORT": str(self.qmaster_port),
            "SGE_EXECD_PORT": str(self.execd_port),
        }

    def qcommand(
        self, *command: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """A Grid Engine client command (qconf, qstat, qhost, ...) against this cluster."""
        done = subprocess.run(
            [str(SGE_LIB / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.environ},
        )
        if check and done.returncode:
            raise DevClusterError(
                f"{' '.join(command)} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done

    # -- start ----------------------------------------------------------------------------

    ROOT_BECAUSE: ClassVar[str] = (
        "sge_execd runs jobs as their users, munged needs its system directories"
    )
    REQUIRES: ClassVar[Requirements] = GRIDENGINE_REQUIREMENTS

    def _ports(self) -> tuple[int, ...]:
        return (self.scheduler_port, self.qpu_port, self.qmaster_port, self.execd_port)

    def _prepare(self) -> dict[str, Path]:
        for sub, mode in (("", 0o755), ("etc", 0o755), ("run", 0o755), ("log", 0o755)):
            (self.directory / sub).mkdir(mode=mode, parents=True, exist_ok=True)
        (self.directory / "scheduler").mkdir(mode=0o700, exist_ok=True)
        self.python = job_python(self.directory)
        return self._write_config()

    def _start_daemons(self, scripts: dict[str, Path]) -> None:
        self._start_gridengine(scripts)

    def _write_config(self) -> dict[str, Path]:
        scripts = gridengine_hooks.write_hook_scripts(
            self.directory / "hooks", self.python, str(self.hooks_config)
        )
        self.hooks_config.write_text(
            "# qhpc-lab Grid Engine hooks of the dev cluster (keys: qhpc_lab/hpc/gridengine.py "
            "GridEngineConfig)\n"
            f'scheduler_url = "{self.scheduler_url}"\n'
            f'resource = "{self.complex}"\n'
            f'complex = "{self.complex}"\n'
            f"slots_total = {self.slots}\n"
            f'run_dir = "{self.run_dir}"\n'
            f'log_file = "{self.hooks_log}"\n'
            f'accounting_file = "{self.accounting_file}"\n'
            "timeout_s = 3.0\n"
        )
        self._save()
        return scripts

    def _init_spool(self, scripts: dict[str, Path]) -> None:
        """A fresh cell: bootstrap, classic spooling, the global configuration, the complexes
        with ``qpu`` and ``qpu_ready`` (what init_cluster of Debian's package does, here)."""
        root = self.sge_root
        shutil.rmtree(root, ignore_errors=True)
        common = root / "default" / "common"
        for folder in (common, root / "spool" / "qmaster", root / "spool" / "execd"):
            folder.mkdir(mode=0o755, parents=True)
        root.chmod(0o755)
        for name in ("bin", "lib", "util", "utilbin"):
            (root / name).symlink_to(SGE_SHARE / name)
        spool = f"{common};{root / 'spool' / 'qmaster'}"
        (common / "bootstrap").write_text(
            "admin_user none\ndefault_domain none\nignore_fqdn true\n"
            f"spooling_method classic\nspooling_lib libspoolc\nspooling_params {spool}\n"
            f"binary_path {SGE_LIB}\nqmaster_spool_dir {root / 'spool' / 'qmaster'}\n"
            "security_mode none\nlistener_threads 2\nworker_threads 2\nscheduler_threads 1\n"
        )
        # Grid Engine insists that a host's name and its address's name agree: here both are
        # localhost, whatever this machine calls itself.
        (common / "act_qmaster").write_text("localhost\n")
        (common / "host_aliases").write_text(f"localhost {socket.gethostname()}\n")
        settings = {
            "execd_spool_dir": str(root / "spool" / "execd"),
            "mailer": "/bin/true",
            "min_uid": "0",
            "min_gid": "0",
            "load_report_time": f"00:00:{self.load_report_s:02d}",
            "load_sensor": str(scripts["load-sensor"]),
            "reporting_params": "accounting=true reporting=false flush_time=00:00:01 "
            "joblog=false sharelog=00:00:00",
        }
        lines = []
        for line in Path("/usr/share/gridengine/default-configuration").read_text().splitlines():
            key = line.split(maxsplit=1)[0] if line.strip() else ""
            lines.append(f"{key} {settings.pop(key)}" if key in settings else line)
        conf = root / "configuration"
        conf.write_text("\n".join(lines) + "\n")
        centry = root / "centry"
        shutil.copytree("/usr/share/gridengine/util/resources/centry", centry)
        for name, consumable in ((self.complex, "JOB"), ("qpu_ready", "NO")):
            (centry / name).write_text(
                f"name {name}\nshortcut {name}\ntype INT\nrelop <=\nrequestable YES\n"
                f"consumable {consumable}\ndefault 0\nurgency 0\n"
            )
        env = {**os.environ, **self.environ}
        for command in (
            ["spoolinit", "classic", "libspoolc", spool, "init"],
            ["spooldefaults", "configuration", str(conf)],
            ["spooldefaults", "complexes", str(centry)],
            ["spooldefaults", "usersets", "/usr/share/gridengine/util/resources/usersets"],
            ["spooldefaults", "managers", "root"],
            ["spooldefaults", "adminhosts", "localhost"],
        ):
            run_command([str(SGE_LIB / command[0]), *command[1:]], command[0], env=env)

    def _start_gridengine(self, scripts: dict[str, Path]) -> None:
        self._init_spool(scripts)
        env = {**os.environ, **self.environ}
        spool = self.sge_root / "spool"
        run_command([str(SGE_LIB / "sge_qmaster")], "sge_qmaster", env=env)
        self.services.adopt("sge_qmaster", spool / "qmaster" / "qmaster.pid")
        wait_until(
            lambda: self.qcommand("qconf", "-sh", check=False).returncode == 0,
            60,
            "sge_qmaster does not answer",
            lambda: self._spool_tail(spool / "qmaster" / "messages"),
        )
        self.qcommand("qconf", "-as", "localhost")
        sched = self.qcommand("qconf", "-ssconf").stdout
        for key, value in (
            ("schedule_interval", "0:0:1"),
            ("flush_submit_sec", "1"),
            ("flush_finish_sec", "1"),
        ):
            sched = re.sub(rf"^{key}\s.*$", f"{key} {value}", sched, flags=re.MULTILINE)
        self._qconf_file("-Msconf", sched)
        self.qcommand(
            "qconf", "-mattr", "exechost", "complex_values",
            f"{self.complex}={self.slots},qpu_ready=1", "global",
        )  # fmt: skip
        run_command([str(SGE_LIB / "sge_execd")], "sge_execd", env=env)
        self.services.adopt("sge_execd", spool / "execd" / "localhost" / "execd.pid")
        wait_until(
            lambda: "lx-" in self.qcommand("qhost", "-h", "localhost", check=False).stdout,
            60,
            "sge_execd does not report to sge_qmaster",
            lambda: self._spool_tail(spool / "execd" / "localhost" / "messages"),
        )
        template = self.qcommand("qconf", "-sq").stdout
        cpus = max(os.cpu_count() or 1, 4)
        for key, value in (
            ("qname", self.queue),
            ("hostlist", "localhost"),
            ("slots", str(cpus)),
            ("load_thresholds", "NONE"),
            ("pe_list", "NONE"),
            ("shell", "/bin/sh"),
            ("prolog", f"root@{scripts['prolog']}"),
            ("epilog", f"root@{scripts['epilog']}"),
        ):
            template = re.sub(rf"^{key}\s.*$", f"{key} {value}", template, flags=re.MULTILINE)
        self._qconf_file("-Aq", template)
        wait_until(self._queue_ready, 60, f"queue {self.queue} is not ready", self._queue_state)

    def _qconf_file(self, option: str, text: str) -> None:
        path = self.directory / "etc" / f"qconf{option}"
        path.write_text(text)
        self.qcommand("qconf", option, str(path))

    def _queue_state(self) -> str:
        return self.qcommand("qstat", "-f", "-q", self.queue, check=False).stdout

    def _queue_ready(self) -> bool:
        """The queue instance is there with no state flags (unknown, alarm, error, ...)."""
        for line in self._queue_state().splitlines():
            if line.startswith(f"{self.queue}@"):
                return len(line.split()) == 5  # queue qtype used/tot load arch [states]
        return False

    def _spool_tail(self, path: Path, lines: int = 15) -> str:
        text = path.read_text(errors="replace") if path.exists() else f"(no {path})"
        return "\n".join(text.splitlines()[-lines:])

    # -- state ------------------------------------------------------------------------------

    def load_values(self) -> dict[str, str]:
        """The global host's complexes as Grid Engine sees them now (``qhost -F``), e.g.
        ``{"qpu": "4.000000", "qpu_ready": "1.000000"}``; the load sensor's values win over
        the configured ones."""
        if self.services.pid("sge_qmaster") is None:
            return {}
        text = self.qcommand("qhost", "-F", f"{self.complex},qpu_ready", check=False).stdout
        values: dict[str, str] = {}
        for match in re.finditer(r"(?:gc|gl|hc|hl):(\w+)=(\S+)", text):
            values[match.group(1)] = match.group(2)
        return values

    def status(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "scheduler": self.scheduler,
            "services": self.services.pids(),
            "queue": self._queue_state().strip() if self.services.pid("sge_qmaster") else None,
            "load": self.load_values(),
            "scheduler_url": self.scheduler_url,
            "environ": self.environ,
            "python": self.python,
        }

    # -- stop -----------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Delete the cluster's jobs (their epilogs revoke the sessions), then stop the
        daemons this cluster started, in reverse order; return their names."""
        if self.services.pid("sge_qmaster") and self.services.pid("sge_execd"):
            self._delete_jobs()
        return self.services.stop()

    def _delete_jobs(self, timeout: float = 20) -> None:
        def jobs() -> bool:
            return bool(self.qcommand("qstat", "-u", "*", check=False).stdout.strip())

        if jobs():
            self.qcommand("qdel", "-u", "*", check=False)
            with contextlib.suppress(DevClusterError):
                wait_until(lambda: not jobs(), timeout, "jobs still running")
