"""The daemon's log: plain text for a terminal, or one JSON object per line for a site's log
pipeline (``qhpc scheduler serve --log-format json``).

Lines about a job carry its ids as fields (:func:`job_fields`): ``job_id``, ``user_id``,
``session_id`` and ``slurm_job_id``, so an operator can follow one job or one batch job
through the log without parsing messages. In text form they are left out of the line.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # kept light: the CLI reads LOG_FORMATS for every command
    from qhpc_lab.scheduler.store import JobRow

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
JSON_FIELDS = ("name", "levelname", "message")
"""Every JSON line's fields (renamed below) after ``time`` (ISO 8601, UTC); a job's ids come
on top (job_fields)."""


def configure(log_format: LogFormat = "text", level: int = logging.INFO) -> None:
    """Send the root logger (the daemon's and uvicorn's lines) to stderr in ``log_format``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                JSON_FIELDS,
                rename_fields={"name": "logger", "levelname": "level"},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def job_fields(job: JobRow) -> dict[str, Any]:
    """The ``extra=`` of a log line about ``job``: its ids, as JSON fields."""
    return {
        "job_id": job.id,
        "user_id": job.user_id,
        "session_id": job.session_id,
        "slurm_job_id": job.slurm_job_id,
    }
