"""A single-node Slurm cluster on this machine, wired to qhpc-lab's hooks: ``qhpc dev-cluster``.

It starts munged (unless one answers already), per QPU (Slurm: ``qpus`` 1 or 2) the emulated
device behind Pasqal's QPU API (``qhpc qpu serve``) and a scheduler daemon with MUNGE auth
driving it through that API, as a site's scheduler drives its QPU, then slurmctld and slurmd
(Debian's Slurm 22.05) without systemd.
Every daemon it starts has a pid file under ``{dir}/run``, and ``stop`` stops exactly those, so
a munged or a Slurm that was there before is left alone. Tests and developers use the same
cluster (tests/test_slurm.py, tests/test_slurm_two_qpus.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qhpc_lab.hpc import gridengine, slurm
from qhpc_lab.hpc.hooks import runnable_by_everyone

DEFAULT_DIR = "/tmp/qhpc-dev-cluster"
PACKAGES = ("slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge")
NEEDED = {
    "/usr/sbin/slurmctld": "slurmctld",
    "/usr/sbin/slurmd": "slurmd",
    "/usr/bin/sbatch": "slurm-client",
    "/usr/bin/scontrol": "slurm-client",
    "/usr/sbin/munged": "munge",
}
SERVICES = {
    "munged": "/usr/sbin/munged",
    "qpu": "qhpc_lab.cli",
    "qpu_b": "qhpc_lab.cli",
    "scheduler": "qhpc_lab.cli",
    "scheduler_b": "qhpc_lab.cli",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
}
"""Start order (stop is the reverse) → a string its command line contains: a recycled pid
that now belongs to another program is never signalled."""
GRIDENGINE_PACKAGES = ("gridengine-master", "gridengine-exec", "gridengine-client", "munge")
GRIDENGINE_NEEDED = {
    "/usr/sbin/sge_qmaster": "gridengine-master",
    "/usr/sbin/sge_execd": "gridengine-exec",
    "/usr/bin/qsub": "gridengine-client",
    "/usr/sbin/munged": "munge",
}
GRIDENGINE_DEBCONF = """\
gridengine-common shared/gridengineconfig boolean false
gridengine-master shared/gridengineconfig boolean false
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string localhost
"""
"""Debian's packages must not set up their own cluster: the dev cluster has its own SGE_ROOT."""
GRIDENGINE_SERVICES = {
    "munged": "/usr/sbin/munged",
    "qpu": "qhpc_lab.cli",
    "qpu_b": "qhpc_lab.cli",
    "scheduler": "qhpc_lab.cli",
    "sge_qmaster": "sge_qmaster",
    "sge_execd": "sge_execd",
}
SGE_LIB = Path("/usr/lib/gridengine")
"""Debian's Grid Engine programs (qconf, spoolinit, ...) and daemons."""
SGE_SHARE = Path("/var/lib/gridengine")
"""Debian's SGE_ROOT skeleton: bin/, lib/, util/, utilbin/ (the dev cluster links to them)."""
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_PID = Path("/run/munge/munged.pid")
RUNUSER = shutil.which("runuser", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or "runuser"


class DevClusterError(Exception):
    """The cluster cannot start; the message says why and what to do."""


class _Cluster:
    """What every dev cluster shares: munged, the scheduler daemon, pid files, stopping."""

    SERVICES: ClassVar[dict[str, str]]
    """Start order (stop is the reverse) → a string its command line contains: a recycled pid
    that now belongs to another program is never signalled."""
    ROOT_BECAUSE: ClassVar[str]
    """Why ``start`` needs root."""
    REQUIRES: ClassVar[tuple[dict[str, str], tuple[str, ...]]]
    """install_packages' arguments: the binaries needed and Debian's packages with them."""
    python: str
    directory: Path
    device: str
    scheduler_port: int
    qpu_port: int

    @property
    def scheduler_url(self) -> str:
        return f"http://127.0.0.1:{self.scheduler_port}"

    def _schedulers(self) -> list[tuple[str, int, str]]:
        """The scheduler daemons to start: (service, port, device profile); state and log
        are ``{dir}/{service}`` and ``{dir}/log/{service}.log``."""
        return [("scheduler", self.scheduler_port, self.device)]

    @property
    def run_dir(self) -> Path:
        """The hooks' session files."""
        return self.directory / "qhpc-run"

    @property
    def hooks_log(self) -> Path:
        return self.directory / "log" / "qhpc-hooks.log"

    def _pid_file(self, service: str) -> Path:
        return self.directory / "run" / f"{service}.pid"

    def _pid(self, service: str) -> int | None:
        """The pid of ``service`` if this cluster started it and it still runs."""
        try:
            pid = int(self._pid_file(service).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid, self.SERVICES[service]) else None

    def _save(self) -> None:
        fields = dataclasses.asdict(self)  # type: ignore[call-overload]
        values = {k: v for k, v in fields.items() if k != "directory"}
        (self.directory / "cluster.json").write_text(json.dumps(values))

    def start(self) -> None:
        """Start what is missing; on any failure stop what was started and raise."""
        if os.geteuid() != 0:
            raise DevClusterError(f"the dev cluster needs root: {self.ROOT_BECAUSE}")
        install_packages(*self.REQUIRES)
        self._check_start(self._ports())
        try:
            scripts = self._prepare()
        except PermissionError as err:  # the job Python (hooks.check_job_python)
            raise DevClusterError(str(err)) from None
        try:
            if not munge_answers():
                self._start_munged()
            # their imports take a while: start the rest meanwhile (a scheduler waits for its
            # QPU API to answer before it reads the device's specs)
            for service, _, device in self._schedulers():
                self._spawn_qpu(service, device)
            schedulers = [self._spawn_scheduler(*each) for each in self._schedulers()]
            self._start_daemons(scripts)
            for (service, port, _), process in zip(self._schedulers(), schedulers, strict=True):
                self._wait_scheduler(service, port, process)
        except BaseException:
            self.stop()
            raise

    def _ports(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _prepare(self) -> dict[str, Path]:
        """Directories, the job Python, the settings and hook scripts; the scripts."""
        raise NotImplementedError

    def _start_daemons(self, scripts: dict[str, Path]) -> None:
        """The first-level scheduler's daemons, up and ready."""
        raise NotImplementedError

    def _check_start(self, ports: tuple[int, ...]) -> None:
        running = [s for s in self.SERVICES if self._pid(s)]
        if running:
            raise DevClusterError(
                f"a dev cluster already runs in {self.directory} ({', '.join(running)}): "
                f"qhpc dev-cluster stop --dir {self.directory}"
            )
        for port in ports:
            if not _port_free(port):
                raise DevClusterError(f"port {port} is in use: pick other ports (see --help)")

    def _start_munged(self) -> None:
        try:
            owner = pwd.getpwnam("munge")
        except KeyError:
            raise DevClusterError("the munge user is missing: reinstall Debian's munge") from None
        for folder in (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        if not MUNGE_KEY.exists():
            MUNGE_KEY.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(MUNGE_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(128))
            os.chown(MUNGE_KEY, owner.pw_uid, owner.pw_gid)
        _run([RUNUSER, "-u", "munge", "--", self.SERVICES["munged"]], "munged")
        self._pid_file("munged").write_text(MUNGE_PID.read_text())
        _wait(munge_answers, 15, "munged does not answer on its socket")

    def _qpu(self, scheduler: str) -> tuple[str, int]:
        """The QPU service a scheduler drives, and its QPU API port."""
        second = scheduler.endswith("_b")
        return ("qpu_b" if second else "qpu"), self.qpu_port + second

    def _spawn_qpu(self, scheduler: str, device: str) -> None:
        """The emulated QPU of profile ``device`` behind the QPU API (``qhpc qpu serve``)."""
        service, port = self._qpu(scheduler)
        log = (self.directory / "log" / f"{service}.log").open("ab")
        command = [sys.executable, "-m", "qhpc_lab.cli", "qpu", "serve", "--profile", device]
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._pid_file(service).write_text(str(process.pid))

    def _spawn_scheduler(self, service: str, port: int, device: str) -> subprocess.Popen[bytes]:
        log = (self.directory / "log" / f"{service}.log").open("ab")
        state = self.directory / service
        state.mkdir(mode=0o700, exist_ok=True)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qhpc_lab.cli",
                "scheduler",
                "serve",
                "--auth",
                "munge",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--qpu-url",
                f"http://127.0.0.1:{self._qpu(service)[1]}",
                "--db",
                f"sqlite:///{state / 'scheduler.db'}",
            ],
            env={**os.environ, "QHPC_STATE_DIR": str(state)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._pid_file(service).write_text(str(process.pid))
        return process

    def _wait_scheduler(self, service: str, port: int, process: subprocess.Popen[bytes]) -> None:
        log = f"{service}.log"

        def healthy() -> bool:
            import httpx

            if process.poll() is not None:
                raise DevClusterError(
                    f"the {service} exited ({process.returncode}):\n{self._tail(log)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            return False

        _wait(healthy, 120, f"the {service} does not answer", lambda: self._tail(log))

    def _tail(self, name: str, lines: int = 15) -> str:
        path = self.directory / "log" / name
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _stop_services(self) -> list[str]:
        """Stop the daemons this cluster started, in reverse order; return their names."""
        stopped = []
        for service in reversed(self.SERVICES):
            pid_file = self._pid_file(service)
            if not pid_file.exists():
                continue
            pid = self._pid(service)
            if pid is not None:
                _terminate(pid, self.SERVICES[service])
                stopped.append(service)
            pid_file.unlink(missing_ok=True)
        return stopped


@dataclass
class DevCluster(_Cluster):
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
    REQUIRES: ClassVar[tuple[dict[str, str], tuple[str, ...]]] = (NEEDED, PACKAGES)

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
        hooks = slurm.write_hook_scripts(
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
        conf = str(self.conf)
        _run(["/usr/sbin/slurmctld", "-f", conf], "slurmctld", lambda: self._tail("slurmctld.log"))
        _run(
            ["/usr/sbin/slurmd", "-f", conf, "-N", self.node],
            "slurmd",
            lambda: self._tail("slurmd.log"),
        )

        def idle() -> bool:
            for service in ("slurmctld", "slurmd"):
                if self._pid(service) is None and self._pid_file(service).exists():
                    raise DevClusterError(f"{service} died:\n{self._tail(service + '.log')}")
            return self.node_state() == "idle"

        _wait(idle, 60, f"node {self.node} is not idle", lambda: self._tail("slurmctld.log"))

    # -- state ------------------------------------------------------------------------------

    def node_state(self) -> str | None:
        """The node's Slurm state (idle, mixed, allocated, drained...); None if unknown."""
        if shutil.which("sinfo") is None or self._pid("slurmctld") is None:
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
            "services": {s: self._pid(s) for s in self.SERVICES},
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
        if self._pid("slurmctld") and self._pid("slurmd"):
            self._cancel_jobs()
        return self._stop_services()

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
                _wait(lambda: not jobs(), timeout, "jobs still running")


@dataclass
class GridEngineCluster(_Cluster):
    """Grid Engine: sge_qmaster and sge_execd of Debian's 8.1.9, with a private SGE_ROOT
    (``{dir}/sge``, rebuilt on each start) whose programs are Debian's, on its own ports."""

    SERVICES: ClassVar[dict[str, str]] = GRIDENGINE_SERVICES
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
    REQUIRES: ClassVar[tuple[dict[str, str], tuple[str, ...]]] = (
        GRIDENGINE_NEEDED,
        GRIDENGINE_PACKAGES,
    )

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
        scripts = gridengine.write_hook_scripts(
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
            _run([str(SGE_LIB / command[0]), *command[1:]], command[0], env=env)

    def _start_gridengine(self, scripts: dict[str, Path]) -> None:
        self._init_spool(scripts)
        env = {**os.environ, **self.environ}
        spool = self.sge_root / "spool"
        _run([str(SGE_LIB / "sge_qmaster")], "sge_qmaster", env=env)
        self._adopt_pid("sge_qmaster", spool / "qmaster" / "qmaster.pid")
        _wait(
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
        _run([str(SGE_LIB / "sge_execd")], "sge_execd", env=env)
        self._adopt_pid("sge_execd", spool / "execd" / "localhost" / "execd.pid")
        _wait(
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
        _wait(self._queue_ready, 60, f"queue {self.queue} is not ready", self._queue_state)

    def _adopt_pid(self, service: str, daemon_pid_file: Path) -> None:
        """The daemons fork and write their own pid files: copy the pid to ours."""
        _wait(daemon_pid_file.exists, 30, f"{service} wrote no pid file")
        self._pid_file(service).write_text(daemon_pid_file.read_text().strip())

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
        if self._pid("sge_qmaster") is None:
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
            "services": {s: self._pid(s) for s in self.SERVICES},
            "queue": self._queue_state().strip() if self._pid("sge_qmaster") else None,
            "load": self.load_values(),
            "scheduler_url": self.scheduler_url,
            "environ": self.environ,
            "python": self.python,
        }

    # -- stop -----------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Delete the cluster's jobs (their epilogs revoke the sessions), then stop the
        daemons this cluster started, in reverse order; return their names."""
        if self._pid("sge_qmaster") and self._pid("sge_execd"):
            self._delete_jobs()
        return self._stop_services()

    def _delete_jobs(self, timeout: float = 20) -> None:
        def jobs() -> bool:
            return bool(self.qcommand("qstat", "-u", "*", check=False).stdout.strip())

        if jobs():
            self.qcommand("qdel", "-u", "*", check=False)
            with contextlib.suppress(DevClusterError):
                _wait(lambda: not jobs(), timeout, "jobs still running")


def load_cluster(
    directory: str | Path, scheduler: str | None = None
) -> DevCluster | GridEngineCluster:
    """The cluster ``{directory}/cluster.json`` describes (defaults if none); ``scheduler``
    (slurm, gridengine) picks the kind when there is none yet."""
    state = Path(directory) / "cluster.json"
    values = json.loads(state.read_text()) if state.is_file() else {}
    kind = values.pop("scheduler", None) or scheduler or "slurm"
    if scheduler and kind != scheduler:
        raise DevClusterError(
            f"{directory} holds a {kind} dev cluster: pick another --dir for {scheduler}"
        )
    if kind == "gridengine":
        return GridEngineCluster(Path(directory), **values)
    return DevCluster(Path(directory), **values)


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
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
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
{slurm.configuration(hooks)}

NodeName={cluster.node} NodeHostname=localhost CPUs={cpus} \
Gres={shares} State=UNKNOWN
PartitionName=debug Nodes={cluster.node} Default=YES MaxTime=INFINITE State=UP
"""


def install_packages(needed: dict[str, str] = NEEDED, packages: tuple[str, ...] = PACKAGES) -> None:
    """Debian's packages for the ``needed`` binaries that are missing (Slurm and MUNGE by
    default); DevClusterError if apt cannot."""
    missing = sorted({package for path, package in needed.items() if not Path(path).exists()})
    if not missing:
        return
    if "slurmctld" in missing or "slurmd" in missing:
        missing = sorted({*missing, "slurm-wlm"})
    print(f"qhpc dev-cluster: installing {' '.join(missing)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    commands: list[tuple[list[str], str | None]] = [
        (["apt-get", "update", "-qq"], None),
        (["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], None),
    ]
    if any(package.startswith("gridengine") for package in missing):
        commands.insert(0, (["debconf-set-selections"], GRIDENGINE_DEBCONF))
    for command, stdin in commands:
        try:
            done = subprocess.run(
                command, input=stdin, capture_output=True, text=True, env=env, timeout=600
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DevClusterError(f"{' '.join(command)} failed: {err}") from None
        if done.returncode:
            raise DevClusterError(
                f"{' '.join(command)} failed ({done.returncode}); install {' '.join(packages)} "
                f"by hand:\n{done.stderr.strip()[-2000:]}"
            )


def job_python(directory: Path) -> str:
    """A Python with qhpc_lab for every job user: this interpreter if they can run it, else a
    venv in ``directory`` on a system Python of the same version that imports this
    environment's packages (a venv under root's home is not reachable for job users). Writing
    the hook scripts checks it (hooks.check_job_python)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = sys.executable
    if not runnable_by_everyone(python):
        base = next(
            (
                path
                for path in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}")
                if Path(path).exists() and runnable_by_everyone(path)
            ),
            None,
        )
        if base is None:
            raise DevClusterError(
                f"{python} is not executable by other users and no system python{version} "
                "is: create the venv where job users can run it"
            )
        bridge = directory / "python"
        _run([base, "-m", "venv", "--without-pip", "--clear", str(bridge)], "python -m venv")
        paths = dict.fromkeys((sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]))
        site = bridge / "lib" / f"python{version}" / "site-packages"
        lines = [f"import site; site.addsitedir({p!r})\n" for p in paths]
        # this qhpc_lab, when it is a checkout on PYTHONPATH rather than the installed one
        source = str(Path(__file__).resolve().parents[2])
        if not any(source.startswith(p) for p in paths):
            lines.append(f"import sys; sys.path.insert(0, {source!r})\n")
        (site / "qhpc-lab-packages.pth").write_text("".join(lines))
        python = str(bridge / "bin" / "python")
    return python


def munge_answers() -> bool:
    """True when munged encodes and decodes a credential on the default socket."""
    from qhpc_lab import munge

    try:
        munge.decode(munge.encode())
    except munge.MungeError:
        return False
    return True


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _run(
    command: list[str], what: str, details: Any = None, env: dict[str, str] | None = None
) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DevClusterError(f"{what} did not start: {err}") from None
    if done.returncode:
        more = f"\n{details()}" if details else ""
        raise DevClusterError(
            f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}{more}"
        )


def _wait(ready: Any, timeout: float, failure: str, details: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            more = f":\n{details()}" if details else ""
            raise DevClusterError(f"{failure} after {timeout:g} s{more}")
        time.sleep(0.2)


def _alive(pid: int, marker: str) -> bool:
    """``pid`` runs (not a zombie) and its command line contains ``marker``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status and marker.encode() in cmdline


def _terminate(pid: int, marker: str, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _alive(pid, marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(pid, marker):
            return
