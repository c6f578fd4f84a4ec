"""What every dev cluster shares: munged, the emulated QPUs and their scheduler daemons, the
job Python, starting all of it in order and stopping what it started."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import psutil

from qhpc_lab.hpc.devcluster.errors import DevClusterError
from qhpc_lab.hpc.devcluster.munged import munge_answers, start_munged
from qhpc_lab.hpc.devcluster.packages import Requirements, install_packages
from qhpc_lab.hpc.devcluster.processes import Services, port_free, run_command, wait_until
from qhpc_lab.hpc.hooks import runnable_by_everyone

if TYPE_CHECKING:
    import httpx

DEFAULT_DIR = "/tmp/qhpc-dev-cluster"
QHPC_CLI = "qhpc_lab.cli"
"""The module the QPU and scheduler daemons run (``python -m``): their command lines name it."""


class Cluster:
    """The part of a dev cluster that is not the first-level scheduler's: subclasses are
    dataclasses that add its daemons (``SERVICES``) and its configuration."""

    SERVICES: ClassVar[dict[str, str]]
    """Start order (stop is the reverse) → a string its command line contains."""
    ROOT_BECAUSE: ClassVar[str]
    """Why ``start`` needs root."""
    REQUIRES: ClassVar[Requirements]
    """The binaries it needs and Debian's packages with them."""
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

    @property
    def services(self) -> Services:
        """The daemons this cluster started, with their pid files in ``{dir}/run``."""
        return Services(self.directory / "run", self.SERVICES)

    def _save(self) -> None:
        fields = dataclasses.asdict(self)  # type: ignore[call-overload]
        values = {k: v for k, v in fields.items() if k != "directory"}
        (self.directory / "cluster.json").write_text(json.dumps(values))

    def start(self) -> None:
        """Start what is missing; on any failure stop what was started and raise."""
        if os.geteuid() != 0:
            raise DevClusterError(f"the dev cluster needs root: {self.ROOT_BECAUSE}")
        install_packages(self.REQUIRES)
        self._check_start(self._ports())
        try:
            scripts = self._prepare()
        except PermissionError as err:  # the job Python (hooks.check_job_python)
            raise DevClusterError(str(err)) from None
        try:
            if not munge_answers():
                start_munged(self.services)
            # their imports take a while: start the rest meanwhile (a scheduler waits for its
            # QPU API to answer before it reads the device's specs)
            for service, _, device in self._schedulers():
                self._spawn_qpu(service, device)
            schedulers = [self._spawn_scheduler(*each) for each in self._schedulers()]
            self._start_daemons(scripts)
            for (service, port, _), process in zip(self._schedulers(), schedulers, strict=True):
                self._wait_qpu(service)  # the scheduler waits for it too (qpu_start_wait_s)
                self._wait_scheduler(service, port, process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> list[str]:
        raise NotImplementedError

    def _ports(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _prepare(self) -> dict[str, Path]:
        """Directories, the job Python, the settings and hook scripts; the scripts."""
        raise NotImplementedError

    def _start_daemons(self, scripts: dict[str, Path]) -> None:
        """The first-level scheduler's daemons, up and ready."""
        raise NotImplementedError

    def _check_start(self, ports: tuple[int, ...]) -> None:
        running = [service for service, pid in self.services.pids().items() if pid]
        if running:
            raise DevClusterError(
                f"a dev cluster already runs in {self.directory} ({', '.join(running)}): "
                f"qhpc dev-cluster stop --dir {self.directory}"
            )
        for port in ports:
            if not port_free(port):
                raise DevClusterError(f"port {port} is in use: pick other ports (see --help)")

    def _qpu(self, scheduler: str) -> tuple[str, int]:
        """The QPU service a scheduler drives, and its QPU API port."""
        second = scheduler.endswith("_b")
        return ("qpu_b" if second else "qpu"), self.qpu_port + second

    def _log(self, service: str) -> Path:
        return self.directory / "log" / f"{service}.log"

    def _spawn_qpu(self, scheduler: str, device: str) -> None:
        """The emulated QPU of profile ``device`` behind the QPU API (``qhpc qpu serve``)."""
        service, port = self._qpu(scheduler)
        command = [sys.executable, "-m", QHPC_CLI, "qpu", "serve", "--profile", device]
        self.services.spawn(
            service, [*command, "--host", "127.0.0.1", "--port", str(port)], self._log(service)
        )

    def _spawn_scheduler(self, service: str, port: int, device: str) -> psutil.Popen:
        state = self.directory / service
        state.mkdir(mode=0o700, exist_ok=True)
        return self.services.spawn(
            service,
            [
                sys.executable,
                "-m",
                QHPC_CLI,
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
            self._log(service),
            env={**os.environ, "QHPC_STATE_DIR": str(state)},
        )

    def _wait_qpu(self, scheduler: str) -> None:
        """Until the QPU API that ``scheduler`` drives answers (its SDK imports done)."""
        import httpx

        service, port = self._qpu(scheduler)
        log = f"{service}.log"
        url = f"http://127.0.0.1:{port}/api/v1/system/operational"

        def answers(client: httpx.Client) -> bool:
            if not self.services.pid(service):
                raise DevClusterError(f"the {service} exited:\n{self._tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                return client.get(url).status_code == 200
            return False

        with _polling_client() as client:
            wait_until(
                lambda: answers(client),
                120,
                f"the {service} does not answer",
                lambda: self._tail(log),
            )

    def _wait_scheduler(self, service: str, port: int, process: psutil.Popen) -> None:
        import httpx

        log = f"{service}.log"

        def healthy(client: httpx.Client) -> bool:
            if process.poll() is not None:
                raise DevClusterError(
                    f"the {service} exited ({process.returncode}):\n{self._tail(log)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                return client.get(f"http://127.0.0.1:{port}/health").status_code == 200
            return False

        with _polling_client() as client:
            wait_until(
                lambda: healthy(client),
                120,
                f"the {service} does not answer",
                lambda: self._tail(log),
            )

    def _tail(self, name: str, lines: int = 15) -> str:
        path = self.directory / "log" / name
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _polling_client() -> httpx.Client:
    """One client for every try of a readiness wait: ``httpx.get`` builds a client and its TLS
    context per call, about 25 ms of CPU taken from the starting service five times a second."""
    import httpx

    return httpx.Client(timeout=1)


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
        run_command([base, "-m", "venv", "--without-pip", "--clear", str(bridge)], "python -m venv")
        paths = dict.fromkeys((sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]))
        site = bridge / "lib" / f"python{version}" / "site-packages"
        lines = [f"import site; site.addsitedir({p!r})\n" for p in paths]
        # this qhpc_lab, when it is a checkout on PYTHONPATH rather than the installed one
        source = str(Path(__file__).resolve().parents[3])
        if not any(source.startswith(p) for p in paths):
            lines.append(f"import sys; sys.path.insert(0, {source!r})\n")
        (site / "qhpc-lab-packages.pth").write_text("".join(lines))
        python = str(bridge / "bin" / "python")
    return python
