"""``qhpc slurm check`` and ``qhpc gridengine check``: a hook setup is checked before it is
deployed, not found broken in the hooks' log at every job start. No services: a tiny HTTP
server stands in for the scheduler's ``/health``."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qhpc_lab import cli
from qhpc_lab.hpc.devcluster import DevClusterError, job_python
from qhpc_lab.hpc.hooks import SettingsError
from qhpc_lab.hpc.slurm import HookConfig
from tests.support.daemons import free_port

TWO_QPUS = """\
run_dir = "/run/qhpc"
timeout_s = 2

[[qpus]]
resource = "qpu_a"
licence = "qpu_a"
scheduler_url = "{url}"

[[qpus]]
resource = "qpu_b"
{key} = "qpu_b"
scheduler_url = "{url}"
"""
GRID_ENGINE = """\
[gridengine]
scheduler_url = "{url}"
complex = "qpu"
slots_total = 8
"""


class _Health(BaseHTTPRequestHandler):
    """The scheduler's ``/health`` as a probe sees it; any other path is 404."""

    def do_GET(self) -> None:
        found = self.path == "/health"
        body = b'{"status": "ok"}' if found else b'{"detail": "Not Found"}'
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        """Quiet: the test's output is the check's."""


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A directory every user can enter (pytest's own are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="qhpc-check-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def python(shared: Path) -> str:
    """A Python with qhpc_lab that every user can run: the hooks' interpreter."""
    try:
        return job_python(shared)
    except DevClusterError as err:
        pytest.skip(str(err))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``qhpc *args``: its exit status, stdout and stderr."""
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def settings(folder: Path, text: str) -> str:
    path = folder / "hooks.toml"
    path.write_text(text)
    return str(path)


def test_a_good_setup_passes_and_says_what_was_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scheduler: str, python: str
) -> None:
    slurm = settings(tmp_path, TWO_QPUS.format(url=scheduler, key="licence"))
    status, out, err = run(capsys, "slurm", "check", "--config", slurm, "--python", python)
    assert (status, err) == (0, ""), err
    assert "2 QPUs: qpu_a, qpu_b" in out
    assert f"qpu_a → {scheduler}/health ok" in out and f"qpu_b → {scheduler}/health ok" in out
    assert f"interpreter {python} runnable by all users" in out
    assert out.endswith("qhpc slurm check: ok\n")
    grid = settings(tmp_path, GRID_ENGINE.format(url=scheduler))
    status, out, err = run(capsys, "gridengine", "check", "--config", grid, "--python", python)
    assert (status, err) == (0, ""), err
    assert f"qpu → {scheduler}/health ok" in out


def test_a_misspelt_key_is_named_with_the_one_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], python: str
) -> None:
    """``license`` for ``licence``: the check fails and suggests the key; the hooks refuse
    the file too (loudly, in their log) rather than count a licence nobody asked for."""
    path = settings(tmp_path, 'scheduler_url = "http://qpu:8006"\nlicense = "qpu"\n')
    status, _, err = run(
        capsys, "slurm", "check", "--config", path, "--python", python, "--offline"
    )
    assert status == 1
    assert "unknown key `license`: did you mean `licence`?" in err, err
    with pytest.raises(SettingsError, match="did you mean `licence`"):
        HookConfig.load(path)


@pytest.mark.parametrize(
    ("side", "text", "expected"),
    [
        pytest.param(
            "slurm",
            TWO_QPUS.format(url="http://qpu:8006", key="licnce"),
            "unknown key `licnce` in [[qpus]] table 2: did you mean `licence`?",
            id="qpus-entry",
        ),
        pytest.param(
            "gridengine",
            GRID_ENGINE.format(url="http://qpu:8006") + "[gridengine.limits]\nslots = 2\n",
            "unknown key `limits` in [gridengine]",
            id="nested-table",
        ),
        pytest.param(
            "gridengine",
            'slots_total = 8\n[gridengine]\ncomplex = "qpu"\n',
            "`slots_total` is outside the [gridengine] table",
            id="outside-the-table",
        ),
        pytest.param(
            "slurm",
            'timeout_s = "5"\n',
            "`timeout_s` must be a number, not a string ('5')",
            id="wrong-type",
        ),
    ],
)
def test_every_level_of_the_file_is_checked(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    python: str,
    side: str,
    text: str,
    expected: str,
) -> None:
    path = settings(tmp_path, text)
    status, out, err = run(capsys, side, "check", "--config", path, "--python", python)
    assert status == 1 and expected in err, err
    assert "schedulers not checked: the settings are wrong" in out


def test_an_unreachable_scheduler_is_named_unless_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scheduler: str, python: str
) -> None:
    """A closed port and a server that is no scheduler fail the check, naming the URL;
    ``--offline`` (a check off the compute nodes) skips the question."""
    closed = f"http://127.0.0.1:{free_port()}"
    path = settings(tmp_path, TWO_QPUS.format(url=closed, key="licence"))
    status, _, err = run(capsys, "slurm", "check", "--config", path, "--python", python)
    assert status == 1
    assert f"scheduler qpu_a → {closed}/health unreachable" in err, err
    assert err.count("unreachable") == 2
    status, out, err = run(
        capsys, "slurm", "check", "--config", path, "--python", python, "--offline"
    )
    assert (status, err) == (0, ""), err
    assert f"qpu_a → {closed} not asked (--offline)" in out
    elsewhere = settings(tmp_path, GRID_ENGINE.format(url=f"{scheduler}/nowhere"))
    status, _, err = run(capsys, "gridengine", "check", "--config", elsewhere, "--python", python)
    assert status == 1 and f"{scheduler}/nowhere/health answered HTTP 404" in err, err


def test_an_interpreter_other_users_cannot_reach_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared: Path, python: str
) -> None:
    """A venv under a 0700 directory (a pyenv under /root): every job user's TaskProlog
    would fail with 'Permission denied'. The check names the directory and the fix."""
    hidden = shared / "home"
    hidden.mkdir(mode=0o700)
    (hidden / "python").symlink_to(python)
    path = settings(tmp_path, GRID_ENGINE.format(url="http://qpu:8006"))
    status, out, err = run(
        capsys, "gridengine", "check", "--config", path, "--python", str(hidden / "python")
    )
    assert status == 1
    assert f"directory {hidden} is mode 0700, not searchable by others" in err, err
    assert "Make the venv with a system Python" in err
    assert "settings" in out and "owner, modes and keys ok" in out
