"""Browser tests of the QPU sidebar: a real scheduler, a real JupyterLab, Debian's Chromium.

This starts the scheduler (a profile with a few-second calibration) and JupyterLab with the
extension, then runs the Galata/Playwright suite in labextension/ui-tests, which leaves its
screenshots and the measured sidebar latency in test-artifacts/ui/. A missing prerequisite
fails the test with the command that provides it: `make test` installs all of them.

Batch runs: no batch system runs here. The user's ledger is seeded with two notebook runs as
``qhpc_lab.runs`` leaves them once their batch jobs have ended (one done, one failed in a cell);
the "Run as batch job" dialog's parameters and submission go through the real server extension
and ``qhpc_lab.runs``, and the submission is refused by the batch system itself (its
configuration is missing), which the dialog shows.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qhpc_lab.batch import BatchLedger
from qhpc_lab.scheduler.auth import make_token
from tests.support.daemons import Daemon, daemon, free_port
from tests.support.identities import ADMIN, OTHER, USER
from tests.support.identities import SECRET as SCHEDULER_SECRET
from tests.support.lab_batch import JOURNAL, seed_notebook_run
from tests.support.notebook_runs import write_notebook
from tests.support.programs import pulser_sequence_json

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
UI_TESTS = ROOT / "labextension" / "ui-tests"
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
EXTENSION = "qhpc-lab-labextension"
TARGET = "qpu"
CALIBRATION_S = 3.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def require_prerequisites() -> None:
    """Fail loudly, naming the fix, rather than skip: `make test` must run these tests."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium fonts-liberation)")
    if shutil.which("node") is None:
        missing.append("node (Node.js 20)")
    if not (UI_TESTS / "node_modules" / "@jupyterlab" / "galata").is_dir():
        missing.append(f"{UI_TESTS}/node_modules (make labextension-test-deps)")
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    if EXTENSION not in listing.stdout + listing.stderr:
        missing.append(f"the {EXTENSION} JupyterLab extension (make labextension)")
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3-qpu" not in KernelSpecManager().find_kernel_specs():
        missing.append("the python3-qpu kernelspec (qhpc kernels install --sys-prefix)")
    if missing:
        pytest.fail("UI test prerequisites missing: " + "; ".join(missing), pytrace=False)


def fast_calibration_profile(path: Path) -> Path:
    """The ``test`` profile with 2 ms shots and a calibration of a few seconds."""
    shipped = importlib.resources.files("qhpc_lab.qpu") / "profiles" / "test.json"
    data = json.loads(shipped.read_text())
    data["name"] = "ui-test"
    data["time_per_shot_s"] = 0.002
    data["calibration"]["duration_s"] = CALIBRATION_S
    path.write_text(json.dumps(data))
    return path


@contextlib.contextmanager
def jupyterlab(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """JupyterLab on a free port, Galata's test settings (no token, loopback only)."""
    port = free_port()
    root = tmp_path / "notebooks"
    root.mkdir()
    config = tmp_path / "jupyter_lab_test_config.py"
    config.write_text(
        "from jupyterlab.galata import configure_jupyter_server\n"
        "configure_jupyter_server(c)\n"
        f"c.ServerApp.port = {port}\n"
        "c.ServerApp.ip = '127.0.0.1'\n"
        f"c.ServerApp.root_dir = {str(root)!r}\n"
        "c.ServerApp.allow_root = True\n"
    )
    log = tmp_path / "jupyterlab.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", f"--config={config}"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with {process.returncode}:\n{log.read_text()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/status", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer in 120 s:\n{log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.copy(log, ARTIFACTS / "jupyterlab.log")


def seed_batch_runs(root: Path, ledger: BatchLedger) -> dict[str, dict[str, str]]:
    """A notebook with a parameters cell under the Lab's root, and two ended runs of it: what
    the browser test needs to know of each (its id, folder, executed notebook)."""
    (root / "study").mkdir()
    notebook = write_notebook(root / "study" / "chain.ipynb")
    done = seed_notebook_run(
        ledger, notebook, state="COMPLETED", job_id="101", ago_s=300, parameters={"omega": 3.5}
    )
    failed = seed_notebook_run(
        ledger,
        notebook,
        state="FAILED",
        job_id="102",
        ago_s=60,
        failure="cell 5: ZeroDivisionError: division by zero",
    )
    return {
        name: {
            "id": entry.id,
            "journal": str(entry.folder / JOURNAL),
            "executed": Path(entry.files["executed"]).relative_to(root).as_posix(),
        }
        for name, entry in (("done", done), ("failed", failed))
    }


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Daemon]:
    profile = fast_calibration_profile(tmp_path / "ui-profile.json")
    with daemon(tmp_path, "--device", str(profile)) as handle:
        yield handle


def test_sidebar_in_chromium(
    tmp_path: Path, scheduler: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    require_prerequisites()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    user_token = make_token(SCHEDULER_SECRET, USER)
    targets = tmp_path / "targets.toml"
    targets.write_text(
        f'default = "{TARGET}"\n[targets.{TARGET}]\ntype = "scheduler"\n'
        f'url = "{scheduler.url}"\ntoken = "{user_token}"\n'
    )
    env = {
        **os.environ,
        "QHPC_TARGETS_FILE": str(targets),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "QHPC_BATCH_DIR": str(tmp_path / "batch"),
        "SLURM_CONF": str(tmp_path / "slurm.conf"),  # empty: sbatch refuses at once
    }
    (tmp_path / "slurm.conf").write_text("")
    with jupyterlab(tmp_path, env) as lab:
        runs = seed_batch_runs(tmp_path / "notebooks", BatchLedger(tmp_path / "batch"))
        playwright = subprocess.run(
            [str(BIN / "jlpm"), "playwright", "test"],
            cwd=UI_TESTS,
            env={
                **env,
                "PATH": f"{BIN}{os.pathsep}{env['PATH']}",
                "CI": "1",
                "CHROMIUM": str(CHROMIUM),
                "QHPC_LAB_URL": lab,
                "QHPC_SCHEDULER_URL": scheduler.url,
                "QHPC_SCHEDULER_PID": str(scheduler.process.pid),
                "QHPC_TARGET": TARGET,
                "QHPC_USER_TOKEN": user_token,
                "QHPC_ADMIN_TOKEN": make_token(SCHEDULER_SECRET, ADMIN, admin=True),
                "QHPC_OTHER_TOKEN": make_token(SCHEDULER_SECRET, OTHER),
                "QHPC_SEQUENCE": pulser_sequence_json(),
                "QHPC_ARTIFACTS": str(ARTIFACTS),
                "QHPC_BATCH_RUNS": json.dumps(runs),
            },
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    output = playwright.stdout + playwright.stderr
    (ARTIFACTS / "playwright.log").write_text(output)
    assert playwright.returncode == 0, f"Playwright failed:\n{output[-6000:]}"
    latency = json.loads((ARTIFACTS / "latency.json").read_text())
    with capsys.disabled():  # a measurement to read in every run, not an assertion
        print(
            "\nsidebar latency, scheduler state change → shown in Chromium (ms): "
            + ", ".join(f"{k.removesuffix('_ms')} {v}" for k, v in latency.items() if k != "job")
        )
