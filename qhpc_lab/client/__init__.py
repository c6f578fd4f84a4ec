"""The kernel side's client: find targets, submit programs, follow jobs, read results.

Discovery (docs/client.md) reads the QRMI job variables and ``~/.config/qhpc/targets.toml``;
three kinds of :class:`Target` sit behind one interface: the second-level scheduler (httpx),
any other QRMI resource (the ``qrmi`` package) and the in-kernel emulator. See docs/client.md.
"""

from qhpc_lab.client._client import (
    Client,
    default_client,
    job,
    jobs,
    submit,
    targets,
    use,
)
from qhpc_lab.client._job import Job, Result
from qhpc_lab.client._target import (
    ClientError,
    JobError,
    JobState,
    RefusedError,
    Target,
    TargetError,
    TargetInfo,
)

__all__ = [
    "Client",
    "ClientError",
    "Job",
    "JobError",
    "JobState",
    "RefusedError",
    "Result",
    "Target",
    "TargetError",
    "TargetInfo",
    "default_client",
    "job",
    "jobs",
    "submit",
    "targets",
    "use",
]
