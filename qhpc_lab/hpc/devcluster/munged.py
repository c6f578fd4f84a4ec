"""munged on the default socket, started as the munge user when none answers there."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
from pathlib import Path

from qhpc_lab.hpc.devcluster.errors import DevClusterError
from qhpc_lab.hpc.devcluster.processes import Services, run_command, wait_until

MUNGED = "/usr/sbin/munged"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_PID = Path("/run/munge/munged.pid")
RUNUSER = shutil.which("runuser", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or "runuser"


def munge_answers() -> bool:
    """True when munged encodes and decodes a credential on the default socket."""
    from qhpc_lab import munge

    try:
        munge.decode(munge.encode())
    except munge.MungeError:
        return False
    return True


def start_munged(services: Services) -> None:
    """munged's folders and key as it insists (owned by munge; a new key if none), the daemon
    (it forks) recorded as the ``munged`` service, ready when it answers."""
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
    run_command([RUNUSER, "-u", "munge", "--", MUNGED], "munged")
    services.record("munged", int(MUNGE_PID.read_text().strip()))
    wait_until(munge_answers, 15, "munged does not answer on its socket")
