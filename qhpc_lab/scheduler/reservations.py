"""Reservations: the whole QPU kept for one owner between two times (rule 8 of docs/policy.md).

An operator reserves the QPU for a user, a Slurm account or a Slurm job over ``[starts_at,
ends_at)``. Inside the window only the owner's work runs; everything else plans around it:
another job's chunks shrink to end before the window starts and resume after it, and a
periodic calibration that would fall due inside the window runs just before it instead, when
that clears the window. Pure functions of the reservations and the time, like the policy that
calls them (:func:`qhpc_lab.scheduler.policy.decide`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


class Work(Protocol):
    """What ownership is decided on (a :class:`~qhpc_lab.scheduler.policy.QueuedJob` is one)."""

    @property
    def user_id(self) -> str: ...

    @property
    def slurm_account(self) -> str | None: ...

    @property
    def slurm_job_id(self) -> str | None: ...


@dataclass(frozen=True)
class Reservation:
    """The whole QPU for ``owner_kind`` = ``owner`` over ``[starts_at, ends_at)``."""

    id: int
    starts_at: float
    ends_at: float
    owner_kind: str
    """One of :data:`OWNER_KINDS`."""
    owner: str

    def owns(self, work: Work) -> bool:
        """Whether ``work`` may run inside this window."""
        value = {
            "user": work.user_id,
            "account": work.slurm_account,
            "slurm_job": work.slurm_job_id,
        }.get(self.owner_kind)
        return value is not None and value == self.owner

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def overlaps(self, starts_at: float, ends_at: float) -> bool:
        return self.starts_at < ends_at and starts_at < self.ends_at


def pending(reservations: Iterable[Reservation], now: float) -> list[Reservation]:
    """The reservations not yet ended at ``now``, by start."""
    return sorted((r for r in reservations if r.ends_at > now), key=lambda r: r.starts_at)


def next_reservation(reservations: Iterable[Reservation], now: float) -> Reservation | None:
    """The reservation in force at ``now``, else the next to start (None: none)."""
    return next(iter(pending(reservations, now)), None)


def closed_from(work: Work, reservations: Sequence[Reservation], now: float) -> float:
    """When the next window ``work`` does not own starts (at or before ``now``: it is inside
    one; infinity: none is pending). ``work``'s shots must end by then."""
    return min(
        (r.starts_at for r in reservations if r.ends_at > now and not r.owns(work)),
        default=math.inf,
    )


def open_at(work: Work, reservations: Sequence[Reservation], t: float) -> float:
    """The first time from ``t`` on that is outside every window ``work`` does not own (windows
    back to back are passed together)."""
    for r in sorted(reservations, key=lambda r: r.starts_at):
        if r.starts_at <= t < r.ends_at and not r.owns(work):
            t = r.ends_at
    return t


def next_boundary(reservations: Iterable[Reservation], now: float) -> float:
    """The next start or end of a window after ``now`` (infinity: none): when who may run
    changes, so when an idle dispatcher must decide again."""
    return min(
        (t for r in reservations for t in (r.starts_at, r.ends_at) if t > now), default=math.inf
    )


def calibration_due(
    now: float,
    due: float,
    calibrated_at: float,
    interval_s: float,
    duration_s: float,
    reservations: Sequence[Reservation],
) -> float:
    """When the periodic calibration due at ``due`` should start, around the reservations.

    A calibration falling due inside a window runs just before it (starting ``duration_s``
    before the window, so it ends as the window starts) when that clears the window: the
    window ends within one interval of the moved calibration, that one does not overlap
    another window, and it is later than the last calibration. Otherwise (and once the window
    has started) it stays due inside the window: the device needs it, the owner loses that time.
    """
    reservations = pending(reservations, now)
    for r in reservations:
        if r.starts_at <= due < r.ends_at:
            moved = r.starts_at - duration_s
            clears = r.ends_at <= r.starts_at + interval_s
            free = not any(o.overlaps(moved, r.starts_at) for o in reservations if o is not r)
            early = clears and free and calibrated_at < moved and now < r.starts_at
            return moved if early else due
    return due
