"""The words the scheduler, the kernel and the sidebar share: job statuses, device states, holds,
quota kinds and units, reservation owners, and how a duration, a place in the queue and device
time read.

Everything may import this module (it imports nothing of qhpc_lab). The documents that carry
these words are :mod:`qhpc_lab.wire`; the JupyterLab sidebar gets both from
``labextension/src/generated.ts``, written by ``python -m qhpc_lab.wire`` and checked by
tests/test_labextension_sync.py.
"""

from __future__ import annotations

import enum
import math
import re


class JobStatus(enum.StrEnum):
    """A job's status: Warden's names, used by every target."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR = "ERROR"
    CANCELED = "CANCELED"


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)
"""A job waiting for the QPU or on it."""
FINAL_STATUSES = (JobStatus.DONE, JobStatus.ERROR, JobStatus.CANCELED)
"""Statuses after which a job never changes."""
JOB_STATUSES = ACTIVE_STATUSES + FINAL_STATUSES


class DeviceState(enum.StrEnum):
    """The QPU's state as a driver reports it and the scheduler serves it."""

    ONLINE = "ONLINE"
    CALIBRATING = "CALIBRATING"
    MAINTENANCE = "MAINTENANCE"
    OFFLINE = "OFFLINE"


DEVICE_STATES = tuple(DeviceState)

HOLDS = ("maintenance", "draining", "down", "loop_hold")
"""What keeps a waiting job from running (a job's ``held_by``, a timeline's holds):
maintenance runs nothing, draining runs only started jobs, down: the QPU says DOWN, loop_hold:
the QPU is kept idle for another's hybrid loop between two of its jobs (bounded)."""
QUOTA_KINDS = ("user", "account")
"""Whom a quota budgets: a user id, or a Slurm account (the session's, from the prolog)."""
QUOTA_UNITS = ("qpu_seconds", "shots")
"""What a quota budgets: device time or shots."""
QPU_SECONDS = "QPU-seconds"
"""The one name of the unit of device time in text a user reads ("3400 of 3600 QPU-seconds")."""
UNIT_NAMES = {"qpu_seconds": QPU_SECONDS, "shots": "shots"}
"""How each of :data:`QUOTA_UNITS` reads."""
JOB_CLASSES = ("development", "test", "production")
"""The policy's classes, lowest priority first (docs/policy.md)."""

OWNER_KINDS = ("user", "account", "slurm_job")
"""Who a reservation can be for: a user id, a Slurm account, a Slurm job id."""

MINUTES_FROM_S = 120
"""Durations from here on read in minutes, up to :data:`HOURS_FROM_S`, then in tenths of an
hour. At both switches the two units name the same time (120 s = 2 min, 120 min = 2.0 h), so
a countdown or an age never jumps back or forth as it crosses one."""
HOURS_FROM_S = 7200


def _half_up(value: float) -> int:
    """Rounding as the browser's ``Math.round`` does (Python's ``round`` goes to even)."""
    return math.floor(value + 0.5)


def format_duration(seconds: float) -> str:
    """42 s, 3 min, 2.5 h: as precise as a glance needs; negative durations read 0 s."""
    s = max(0.0, seconds)
    if s < MINUTES_FROM_S:
        return f"{_half_up(s)} s"
    if s < HOURS_FROM_S:
        return f"{_half_up(s / 60)} min"
    tenths = _half_up(s / 360)
    return f"{tenths // 10}.{tenths % 10} h"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 22nd."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def format_position(position: int, waiting: int | None = None) -> str:
    """Where a job stands, one wording everywhere: ``running`` (position 0), ``2nd of 3
    waiting``, or ``2nd waiting`` where the number of waiting jobs is not known (or is out of
    date: fewer than the position)."""
    if position == 0:
        return "running"
    if waiting is None or waiting < position:
        return f"{ordinal(position)} waiting"
    return f"{ordinal(position)} of {waiting} waiting"


def format_count(n: int) -> str:
    """A count as people read it: thousands grouped by a space (``1 000``, ``12 345``)."""
    return f"{n:,}".replace(",", " ")


def format_sets_done(done: int, total: int) -> str:
    """A sweep's progress, one wording everywhere: ``sets 120 of 1 000 done``."""
    return f"sets {format_count(done)} of {format_count(total)} done"


def start_in_s(end_in_s: float, shots_left: int, time_per_shot_s: float) -> float:
    """Seconds until a waiting job is expected to start: its expected end less its own shots'
    time on the device (as ``GET /estimate`` splits its ``done_in_s``)."""
    return max(0.0, end_in_s - shots_left * time_per_shot_s)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds from ``3600``, ``90s``, ``30m``, ``12h``, ``7d`` or ``2w``."""
    found = _DURATION.fullmatch(text.strip().lower())
    if not found or float(found[1]) <= 0:
        raise ValueError(f"a duration is a positive number with s, m, h, d or w: not {text!r}")
    return float(found[1]) * _UNIT_S[found[2]]
