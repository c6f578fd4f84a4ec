"""qhpc-lab: run Pulser and Qiskit programs on an HPC centre's QPU, or on the local emulator.

    import qhpc_lab
    job = qhpc_lab.submit(sequence, shots=500)   # the job's QPU, else the emulator (announced)
    job.result().counts

In Jupyter: ``%load_ext qhpc_lab``, then ``%%qpu`` cells. The API loads on first use, so
``import qhpc_lab`` stays cheap (the scheduler daemon imports this package too).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("qhpc-lab")
except PackageNotFoundError:  # a source tree run without installing it
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from qhpc_lab.client import (
        ClientError,
        Job,
        JobError,
        Result,
        TargetInfo,
        job,
        jobs,
        loop,
        quotas,
        session,
        submit,
        targets,
        use,
    )

__all__ = [
    "ClientError",
    "Job",
    "JobError",
    "Result",
    "TargetInfo",
    "job",
    "jobs",
    "load_ipython_extension",
    "loop",
    "quotas",
    "session",
    "submit",
    "targets",
    "use",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from qhpc_lab import client

        return getattr(client, name)
    raise AttributeError(f"module 'qhpc_lab' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext qhpc_lab``: register the ``%qpu`` magics."""
    from qhpc_lab.jupyter.magics import load_ipython_extension as load

    load(ipython)
