"""Real munged daemons for the MUNGE and QRMI tests.

QRMI's ``pasqal-local`` client always talks to /run/munge/munge.socket.2, so
:func:`system_munged` (the ``munged`` fixture) makes a daemon answer there: it reuses a
running one, else starts one and stops only that one afterwards. Tests that stop or restart
munged use :class:`PrivateMunged` (the ``private_munged`` fixture): a daemon of their own on a
socket of its own, which nobody else shares.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import httpx
import pytest

from qhpc_lab import munge

MUNGED = "/usr/sbin/munged"
PID_FILE = Path("/run/munge/munged.pid")
KEY_FILE = Path("/etc/munge/munge.key")
DIRS = (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge"), KEY_FILE.parent)


class FreshCredential(httpx.Auth):
    """A new credential per request (for this process's uid), bound to the request as qhpc's
    clients make them: the scheduler refuses replays, and root's counts as admin only so."""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Munge-Cred"] = munge.encode_for_request(
            request.method, request.url.raw_path, request.read()
        )
        yield request


def munge_answers() -> bool:
    """True when ``munge -n | unmunge`` succeeds against the default socket."""
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=5)
        if cred.returncode:
            return False
        check = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=5)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return check.returncode == 0


def _prepare(owner: pwd.struct_passwd) -> None:
    """Directories and key as munged insists: owned by munge, not writable by others."""
    for folder in DIRS:
        folder.mkdir(mode=0o755 if folder.parts[1] == "run" else 0o700, exist_ok=True)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    if not KEY_FILE.exists():
        fd = os.open(KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(128))
        os.chown(KEY_FILE, owner.pw_uid, owner.pw_gid)


def _stop(pid: int, timeout: float = 10) -> None:
    """SIGTERM our munged and wait (bounded) until it is gone or a zombie nobody reaps."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    status = Path(f"/proc/{pid}/status")
    while time.monotonic() < deadline:
        try:
            if "\nState:\tZ" in status.read_text():
                return
        except FileNotFoundError:
            return
        time.sleep(0.05)


@contextlib.contextmanager
def system_munged() -> Iterator[None]:
    """Ensure munged answers on the default socket until the block ends."""
    if munge_answers():
        yield
        return
    if not (Path(MUNGED).exists() and shutil.which("munge") and shutil.which("unmunge")):
        pytest.fail(
            "MUNGE is not installed (need /usr/sbin/munged, munge, unmunge): "
            "run scripts/system-deps.sh (Debian packages munge, libmunge2)"
        )
    if os.geteuid() != 0:
        pytest.fail("munged is not running and starting it needs root (runuser -u munge)")
    try:
        owner = pwd.getpwnam("munge")
    except KeyError:
        pytest.fail("the munge user does not exist: reinstall Debian's munge package")
    _prepare(owner)
    started = subprocess.run(
        ["runuser", "-u", "munge", "--", MUNGED], capture_output=True, text=True, timeout=30
    )
    if started.returncode:
        pytest.fail(f"munged did not start ({started.returncode}): {started.stderr.strip()}")
    pid = int(PID_FILE.read_text().strip())
    try:
        deadline = time.monotonic() + 15
        while not munge_answers():
            if time.monotonic() > deadline:
                pytest.fail("munged started but does not answer on /run/munge/munge.socket.2")
            time.sleep(0.05)
        yield
    finally:
        _stop(pid)


class PrivateMunged:
    """A munged child of this process on its own socket, key and files in a temporary folder.

    Restarting it empties its replay cache (it lives in munged's memory only) but keeps the
    key, so credentials made before a restart still decode after it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = str(root / "munge.socket")
        self.process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            owner = pwd.getpwnam("munge")
            uid, gid = owner.pw_uid, owner.pw_gid
            self._user: dict[str, object] = {"user": uid, "group": gid, "extra_groups": []}
        else:
            self._user, uid, gid = {}, os.getuid(), os.getgid()
        root.chmod(0o755)  # munged insists that everyone may reach its socket
        key = root / "munge.key"
        key.write_bytes(secrets.token_bytes(128))
        key.chmod(0o400)
        for path in (root, key):
            os.chown(path, uid, gid)

    def start(self) -> None:
        """Start munged and wait (bounded) until it decodes what it encodes."""
        root = self.root
        command = [
            MUNGED,
            "--foreground",
            f"--socket={self.socket}",
            f"--key-file={root / 'munge.key'}",
            f"--pid-file={root / 'munged.pid'}",
            f"--seed-file={root / 'munged.seed'}",
            f"--log-file={root / 'munged.log'}",
        ]
        with (root / "output.log").open("ab") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, **self._user
            )
        deadline = time.monotonic() + 15
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"munged exited: {(root / 'output.log').read_text()}")
            try:
                munge.decode(munge.encode(socket=self.socket), self.socket)
                return
            except munge.MungeError:
                if time.monotonic() > deadline:
                    pytest.fail(f"munged does not answer on {self.socket}")
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM and wait: munged removes its socket on the way out."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: munged leaves its socket behind, and connecting to it is refused."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def started_private_munged() -> Iterator[PrivateMunged]:
    """A started munged that the caller may stop and restart; stopped and removed afterwards."""
    if not Path(MUNGED).exists():
        pytest.fail("MUNGE is not installed (need /usr/sbin/munged): run scripts/system-deps.sh")
    daemon = PrivateMunged(Path(tempfile.mkdtemp(prefix="qhpc-munged-")))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(daemon.root, ignore_errors=True)
