"""``qhpc admin`` as an operator runs it, against a scheduler the test started."""

from __future__ import annotations

import subprocess
import sys


def qhpc_admin(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``qhpc admin --url URL --auth token --token TOKEN ARGS...`` as a process, its output
    captured."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "qhpc_lab.cli",
            "admin",
            "--url",
            url,
            "--auth",
            "token",
            "--token",
            token,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
