"""The wheel a site installs (docs/hpc-deployment.md, ``make wheel``), built offline from this
environment as the Makefile builds it, holds what the guide uses, and installs into a fresh
venv without its dependencies: ``qhpc_lab`` imports and the guide's files lie where it says."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "qhpc_lab" / "labextension" / "static" / "style.js"
DATA = "share/jupyter/labextensions/qhpc-lab-labextension"
INSTALLED = (
    f"{DATA}/package.json",
    f"{DATA}/static/style.js",
    "share/jupyter/kernels/python3-qpu/kernel.json",
    "etc/jupyter/jupyter_server_config.d/qhpc_lab.json",
    "share/qhpc-lab/deploy/prometheus/qhpc-rules.yml",
    "share/qhpc-lab/deploy/grafana/dashboards/qhpc-dashboard.json",
)
"""Data files, relative to the venv they are installed into."""
PACKAGE = (
    "qhpc_lab/__init__.py",
    "qhpc_lab/cli.py",
    "qhpc_lab/hpc/jupyterhub_config.py",
    "qhpc_lab/hpc/qhpc-scheduler.service",
)

pytestmark = pytest.mark.slow


def _run(*command: str | Path) -> str:
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, f"{' '.join(map(str, command))}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert EXTENSION.exists(), "the JupyterLab extension is not built: make install"
    out = tmp_path_factory.mktemp("dist")
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        out,
        ROOT,
    )
    [built] = out.glob("qhpc_lab-*-py3-none-any.whl")
    return built


def test_wheel_holds_the_package_extension_kernelspec_and_deploy_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    version = wheel.name.split("-")[1]
    data = f"qhpc_lab-{version}.data/data"
    missing = [n for n in (*PACKAGE, *(f"{data}/{p}" for p in INSTALLED)) if n not in names]
    assert not missing, missing
    assert any(n.startswith(f"{data}/{DATA}/static/remoteEntry.") for n in names)
    assert not any(n.startswith("qhpc_lab/labextension/") for n in names)  # in share/ only
    entry_points = zipfile.ZipFile(wheel).read(f"qhpc_lab-{version}.dist-info/entry_points.txt")
    assert b"qhpc = qhpc_lab.cli:main" in entry_points


def test_wheel_installs_into_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        wheel,
    )
    where = _run(python, "-I", "-c", "import qhpc_lab, qhpc_lab.hpc; print(qhpc_lab.__file__)")
    package = Path(where.strip()).parent
    assert package.is_relative_to(venv), where
    assert (package / "hpc" / "jupyterhub_config.py").is_file()
    assert (package / "hpc" / "qhpc-scheduler.service").is_file()
    assert (venv / "bin" / "qhpc").is_file()
    missing = [p for p in INSTALLED if not (venv / p).is_file()]
    assert not missing, missing
