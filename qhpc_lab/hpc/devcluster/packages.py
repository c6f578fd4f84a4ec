"""Debian's packages for a dev cluster's binaries, installed with apt-get when missing."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from qhpc_lab.hpc.devcluster.errors import DevClusterError


@dataclass(frozen=True)
class Requirements:
    """What a kind of dev cluster needs from Debian."""

    binaries: dict[str, str]
    """A binary's path → the package that installs it."""
    packages: tuple[str, ...]
    """All of them, named when apt cannot install them."""
    companions: dict[str, str] = field(default_factory=dict)
    """A package → one installed beside it whenever it is (slurmd → slurm-wlm)."""
    preseed: str = ""
    """debconf-set-selections lines given before installing one of ``preseeded``."""
    preseeded: tuple[str, ...] = ()
    """The packages whose installation asks what ``preseed`` answers."""


def install_packages(requirements: Requirements) -> None:
    """The packages of the binaries that are missing; DevClusterError if apt cannot."""
    missing = {p for path, p in requirements.binaries.items() if not Path(path).exists()}
    if not missing:
        return
    missing |= {requirements.companions[p] for p in missing if p in requirements.companions}
    names = sorted(missing)
    print(f"qhpc dev-cluster: installing {' '.join(names)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    commands: list[tuple[list[str], str | None]] = [
        (["apt-get", "update", "-qq"], None),
        (["apt-get", "install", "-y", "-qq", "--no-install-recommends", *names], None),
    ]
    if missing & set(requirements.preseeded):
        commands.insert(0, (["debconf-set-selections"], requirements.preseed))
    for command, stdin in commands:
        try:
            done = subprocess.run(
                command, input=stdin, capture_output=True, text=True, env=env, timeout=600
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DevClusterError(f"{' '.join(command)} failed: {err}") from None
        if done.returncode:
            raise DevClusterError(
                f"{' '.join(command)} failed ({done.returncode}); install "
                f"{' '.join(requirements.packages)} by hand:\n{done.stderr.strip()[-2000:]}"
            )
