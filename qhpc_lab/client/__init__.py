"""The kernel side's client: find targets, submit programs, follow jobs, read results.

Discovery (docs/client.md) reads the QRMI job variables and ``~/.config/qhpc/targets.toml``;
three kinds of :class:`Target` sit behind one interface: the second-level scheduler (httpx),
any other QRMI resource (the ``qrmi`` package) and the in-kernel emulator. See docs/client.md.

For the parts above the client (the Jupyter server extension, ``qhpc admin``): :func:`discover`
finds targets as a kernel does, :class:`SchedulerTarget` talks to one scheduler, and
:func:`call` runs a target's coroutine on the client's loop and waits for it.
"""

from qhpc_lab.client._client import (
    Client,
    default_client,
    job,
    jobs,
    loop,
    quotas,
    session,
    submit,
    targets,
    use,
)
from qhpc_lab.client._discovery import discover, targets_file_path
from qhpc_lab.client._hybrid import Loop, Session
from qhpc_lab.client._job import Job, Result, expected_times
from qhpc_lab.client._loop import call
from qhpc_lab.client._scheduler import SchedulerTarget
from qhpc_lab.client._target import (
    AnswerError,
    CalibrationRange,
    ClientError,
    Estimate,
    JobError,
    JobState,
    Quota,
    RefusedError,
    SetResult,
    Target,
    TargetError,
    TargetInfo,
)
from qhpc_lab.client._timeline import waited_summary

__all__ = [
    "AnswerError",
    "CalibrationRange",
    "Client",
    "ClientError",
    "Estimate",
    "Job",
    "JobError",
    "JobState",
    "Loop",
    "Quota",
    "RefusedError",
    "Result",
    "SchedulerTarget",
    "Session",
    "SetResult",
    "Target",
    "TargetError",
    "TargetInfo",
    "call",
    "default_client",
    "discover",
    "expected_times",
    "job",
    "jobs",
    "loop",
    "quotas",
    "session",
    "submit",
    "targets",
    "targets_file_path",
    "use",
    "waited_summary",
]
