"""What both sides of the batch seam share: the job script and what it leaves behind."""

from __future__ import annotations

import shlex
from pathlib import Path

from qhpc_lab.batch._model import BatchError, BatchJob, BatchRequest, BatchState

EXIT_FILE = ".batch-exit"
"""What the job script leaves in its workdir when its command ends: the exit status."""
CANCELLED_FILE = ".batch-cancelled"


def job_script(request: BatchRequest) -> str:
    """The shell script both sides submit: the request's variables, the command, and its exit
    status written to :data:`EXIT_FILE` (read once the batch system forgets the job)."""
    for name in request.environment:
        if not name.isidentifier() or not name.isascii():
            raise BatchError(f"{name!r} cannot be an environment variable's name")
    exports = "".join(
        f"export {name}={shlex.quote(value)}\n" for name, value in request.environment.items()
    )
    return (
        "#!/bin/bash\n"
        f"{exports}"
        f"cd {shlex.quote(str(request.workdir))} || exit 1\n"
        f"{shlex.join(request.command)}\n"
        "status=$?\n"
        f"echo $status > {EXIT_FILE}.partial && mv {EXIT_FILE}.partial {EXIT_FILE}\n"
        "exit $status\n"
    )


def left_behind(system: str, job_id: str, workdir: Path | None) -> BatchJob:
    """A job the batch system no longer knows, from the files it left in ``workdir``."""
    if workdir is not None and (workdir / CANCELLED_FILE).is_file():
        return BatchJob(job_id, system, BatchState.CANCELLED, reason="canceled")
    if workdir is not None and (workdir / EXIT_FILE).is_file():
        text = (workdir / EXIT_FILE).read_text().strip()
        code = int(text) if text.lstrip("-").isdigit() else None
        state = BatchState.COMPLETED if code == 0 else BatchState.FAILED
        return BatchJob(job_id, system, state, exit_code=code)
    if workdir is not None and workdir.is_dir():
        return BatchJob(
            job_id,
            system,
            BatchState.FAILED,
            reason=f"{system} no longer knows job {job_id} and it left no exit status "
            "(killed at a limit, or its node failed)",
        )
    raise BatchError(f"{system} knows no job {job_id}")


def note_cancelled(workdir: Path | None) -> None:
    if workdir is not None and workdir.is_dir():
        (workdir / CANCELLED_FILE).touch()
