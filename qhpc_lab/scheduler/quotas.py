"""Quotas: an operator's budget of QPU-seconds or shots per user or Slurm account and period.

PURE, like :mod:`qhpc_lab.scheduler.policy`: no I/O, no clock. The daemon's store sums the use
and calls :func:`refusal` in the transaction that queues the job (so two submissions cannot
both pass a nearly spent budget); the simulation benchmark calls the same function with its
own use and virtual time. docs/policy.md ("Quotas") states the rules:

- a job is charged to the period it was SUBMITTED in;
- a job in the queue or running is charged what it has used plus :func:`cost` of the shots it
  has left (a reservation); once it ends, only what it used (a cancelled or failed job gives
  the rest back);
- a submission is refused when use plus its cost would exceed the budget (exactly reaching it
  is allowed).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from qhpc_lab.vocabulary import QUOTA_KINDS, QUOTA_UNITS, UNIT_NAMES
from qhpc_lab.wire.times import iso_time

SUBJECT_KINDS = QUOTA_KINDS
UNITS = QUOTA_UNITS
CALENDAR_PERIODS = ("day", "week", "month")
"""UTC calendar periods: from 00:00Z, a week from Monday, a month from its first day."""
_SECONDS_PERIOD = re.compile(r"([1-9][0-9]{0,9})s\Z")
PERIOD_PATTERN = r"^(day|week|month|[1-9][0-9]{0,9}s)$"
"""A period: a calendar one, or ``<N>s``, N seconds counted from the Unix epoch (so a
``3600s`` period resets on every whole UTC hour)."""
MAX_BUDGET = 1e15
_TOLERANCE = 1e-9
"""Relative slack when comparing sums of QPU-seconds with a budget (float rounding)."""


class InvalidQuota(ValueError):
    """A quota setting out of its domain; ``setting`` names the field."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class Quota:
    """A budget of ``unit`` for one user or account (``kind``, ``subject``) per ``period``."""

    kind: str
    subject: str
    unit: str
    budget: float
    period: str = "month"

    def checked(self) -> Quota:
        """This quota, or InvalidQuota naming the field out of its domain."""
        if self.kind not in SUBJECT_KINDS:
            raise InvalidQuota("kind", f"kind must be one of {', '.join(SUBJECT_KINDS)}")
        if not self.subject:
            raise InvalidQuota("subject", "subject must not be empty")
        if self.unit not in UNITS:
            raise InvalidQuota("unit", f"unit must be one of {', '.join(UNITS)}")
        if not (0 <= self.budget <= MAX_BUDGET) or math.isnan(self.budget):
            raise InvalidQuota("budget", f"budget must be between 0 and {MAX_BUDGET:g}")
        if self.period not in CALENDAR_PERIODS and not _SECONDS_PERIOD.match(self.period):
            raise InvalidQuota("period", "period must be day, week, month or <N>s")
        return self

    @property
    def name(self) -> str:
        """``account physics``: whom it budgets, as messages say it."""
        return f"{self.kind} {self.subject}"


@dataclass(frozen=True)
class QuotaRefusal:
    """Why a submission was refused: the quota, its use, what the job needs, and when the
    period resets (Unix times)."""

    quota: Quota
    used: float
    requested: float
    period_start: float
    resets_at: float

    @property
    def message(self) -> str:
        """One line for the user, e.g. ``quota for account physics: 3400 of 3600 QPU-seconds used
        this day; this job needs ~400; resets at 2026-12-03T00:00Z``."""
        q, unit = self.quota, UNIT_NAMES[self.quota.unit]
        about = "~" if q.unit == "qpu_seconds" else ""
        return (
            f"quota for {q.name}: {_amount(self.used)} of {_amount(q.budget)} {unit} used "
            f"{_period_words(q.period)}; this job needs {about}{_amount(self.requested)}; "
            f"resets at {_moment(self.resets_at)}"
        )

    def fields(self) -> dict[str, Any]:
        """The refusal's numbers, for the error document beside ``detail``."""
        return {
            "kind": self.quota.kind,
            "subject": self.quota.subject,
            "unit": self.quota.unit,
            "period": self.quota.period,
            "budget": self.quota.budget,
            "used": self.used,
            "requested": self.requested,
            "resets_at": self.resets_at,
        }


class QuotaExceeded(Exception):
    """Raised by the store when :func:`refusal` refuses a job inside its transaction."""

    def __init__(self, refusal: QuotaRefusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def cost(unit: str, shots: int, time_per_shot_s: float) -> float:
    """What ``shots`` shots are charged before they run: exact in shots; in QPU-seconds the
    device time the ETAs assume (shots × time per shot, as ``policy.run_through``; chunks
    add no device time of their own)."""
    return float(shots) if unit == "shots" else shots * time_per_shot_s


def charged(
    unit: str, shots: int, shots_done: int, qpu_seconds: float, active: bool, time_per_shot_s: float
) -> float:
    """What one job of the period is charged: while ``active`` (queued or running) what it
    used plus the :func:`cost` of its shots left, once ended what it used. The store sums
    this in SQL (``store.quotas.quota_used``); a simulation sums it over its own jobs."""
    if unit == "shots":
        return float(shots if active else shots_done)
    return qpu_seconds + (cost(unit, shots - shots_done, time_per_shot_s) if active else 0.0)


def period_bounds(quota: Quota, now: float) -> tuple[float, float]:
    """The period of ``quota`` that holds ``now``: [start, resets_at) as Unix times."""
    seconds = _SECONDS_PERIOD.match(quota.period)
    if seconds:
        length = int(seconds.group(1))
        start = math.floor(now / length) * length
        return float(start), float(start + length)
    moment = datetime.fromtimestamp(now, UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if quota.period == "day":
        start, end = day, day + timedelta(days=1)
    elif quota.period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else (start.replace(month=start.month + 1))
        )
    return start.timestamp(), end.timestamp()


def refusal(quota: Quota, used: float, requested: float, now: float) -> QuotaRefusal | None:
    """None when a job costing ``requested`` fits ``quota`` with ``used`` already charged in
    the period holding ``now``; else why not. Reaching the budget exactly is allowed."""
    if used + requested <= quota.budget * (1 + _TOLERANCE) + _TOLERANCE:
        return None
    start, resets_at = period_bounds(quota, now)
    return QuotaRefusal(quota, used, requested, start, resets_at)


def _amount(value: float) -> str:
    return f"{round(value, 1):g}" if abs(value) < 1e6 else f"{value:.0f}"


def _period_words(period: str) -> str:
    return f"this {period}" if period in CALENDAR_PERIODS else f"in this {period[:-1]} s period"


def _moment(timestamp: float) -> str:
    """A period's end as a message gives it: to the minute when it falls on one."""
    whole_minute = datetime.fromtimestamp(timestamp, UTC).second == 0
    return iso_time(timestamp, timespec="minutes" if whole_minute else "seconds")
