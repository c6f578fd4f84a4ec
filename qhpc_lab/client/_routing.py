"""Choosing where a program runs: one of several QPU targets (``target="auto"``,
docs/client.md), and whether a program that fell back to the in-kernel emulator fits there.

:func:`choose` is pure: given what each target answered about one program (does its device
accept it, is it up, when would the program be done there), it picks the earliest estimated
completion among those that accept it and says why in one line. :func:`kernel_fit` weighs an
emulation's plan against what the kernel's machine may spend on it. The client asks the
targets (:meth:`qhpc_lab.client.Client.submit`); nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qhpc_lab.client._target import RefusedError, TargetError
from qhpc_lab.programs import Program
from qhpc_lab.vocabulary import format_duration

if TYPE_CHECKING:
    from qhpc_lab.emulators import EnginePlan

KERNEL_LIMIT_S = 60.0
"""The longest emulation (its plan's estimate on this machine) the fallback runs in the
kernel; a longer one goes to a cluster emulator (its ``fallback_above_s`` overrides this)."""
KERNEL_MEMORY_SHARE = 0.5
"""The share of this machine's memory an in-kernel emulation may plan to use (a cluster
emulator's ``fallback_above_memory_mb`` overrides it): the kernel, the notebook server and
other users' kernels on a login node need the rest."""

AUTO = "auto"
"""The target name that asks the client to choose, per program."""
TIE_S = 1.0
"""Estimates this close to the earliest are ties: the fresher calibration wins, then the order
in which the targets were found (the job's QRMI resources first)."""


@dataclass(frozen=True)
class Answer:
    """What one target said about one program."""

    target: str
    down: str | None = None
    """Why it cannot take the program now (unreachable, maintenance, a drain); None: up."""
    refusal: str | None = None
    """Why its device refuses the program (format, atoms, duration, ...); None: accepts."""
    done_in_s: float | None = None
    """Seconds until it would end: its queue's wait plus the program's own run (None: unknown)."""
    calibration_age_s: float | None = None
    bounds_calibration_age: bool = True
    """Whether it honours a job's ``max_calibration_age_s`` (our scheduler does)."""


@dataclass(frozen=True)
class Route:
    """The chosen target and the line that says why."""

    target: str
    reason: str


def choose(answers: Sequence[Answer], max_calibration_age_s: float | None = None) -> Route:
    """The target to send the program to, among ``answers`` (in discovery order).

    Eligible: up, accepting the program and, when the job bounds its calibration age,
    honouring that bound (the estimates then include the early calibrations it needs). The
    earliest ``done_in_s`` wins (unknown counts last); :data:`TIE_S` apart or less is a tie,
    won by the fresher calibration, then by order. TargetError when every target is down,
    RefusedError (rule ``auto``) when those up all refuse it, each with every target's reason.
    """
    if not answers:
        raise TargetError("no QPU target to choose from")
    up = [a for a in answers if a.down is None]
    if not up:
        raise TargetError(
            "no QPU target can take the program: " + "; ".join(_down(a) for a in answers)
        )
    bounded = max_calibration_age_s is not None
    eligible = [a for a in up if a.refusal is None and (a.bounds_calibration_age or not bounded)]
    if not eligible:
        raise RefusedError(
            "no QPU target accepts the program: "
            + "; ".join(_excluded(a, bounded) for a in answers),
            rule=AUTO,
        )
    earliest = min(_eta(a) for a in eligible)
    tied = [a for a in eligible if _eta(a) == earliest or _eta(a) - earliest <= TIE_S]
    best = min(
        tied,
        key=lambda a: math.inf if a.calibration_age_s is None else a.calibration_age_s,
    )
    return Route(best.target, _reason(best, eligible, tied, answers, bounded))


def _eta(answer: Answer) -> float:
    return math.inf if answer.done_in_s is None else answer.done_in_s


def _done(answer: Answer) -> str:
    if answer.done_in_s is None:
        return "no estimate"
    return f"done in ~{format_duration(answer.done_in_s)}"


def _versus(answer: Answer) -> str:
    if answer.done_in_s is None:
        return f"no estimate from {answer.target}"
    return f"~{format_duration(answer.done_in_s)} on {answer.target}"


def _down(answer: Answer) -> str:
    return f"{answer.target} is down ({answer.down})"


def _excluded(answer: Answer, bounded: bool) -> str:
    if answer.down is not None:
        return _down(answer)
    if answer.refusal is not None:
        return f"{answer.target} refuses: {answer.refusal}"
    if bounded and not answer.bounds_calibration_age:
        return f"{answer.target} cannot bound the calibration age"
    return f"{answer.target} accepts"


def _reason(
    best: Answer,
    eligible: list[Answer],
    tied: list[Answer],
    answers: Sequence[Answer],
    bounded: bool,
) -> str:
    """``qpu_b: done in ~40 s vs ~3 min on qpu_a (qpu_c refuses: ...)``."""
    others = [a for a in eligible if a is not best]
    if not others:
        reason = f"{best.target}: the only QPU target that can take the program"
    else:
        versus = ", ".join(_versus(a) for a in others)
        reason = f"{best.target}: {_done(best)} vs {versus}"
        if len(tied) > 1:
            fresher = best.calibration_age_s is not None and any(
                a.calibration_age_s is None or a.calibration_age_s > best.calibration_age_s
                for a in tied
                if a is not best
            )
            if fresher:
                why = f"calibrated {format_duration(best.calibration_age_s or 0)} ago, the freshest"
            else:
                why = "listed first"
            reason += f"; a tie, {why}"
    notes = [_excluded(a, bounded) for a in answers if a not in eligible]
    return f"{reason} ({'; '.join(notes)})" if notes else reason


@dataclass(frozen=True)
class KernelFit:
    """An emulation's plan against what the kernel's machine may spend on it."""

    plan: EnginePlan
    limit_s: float
    limit_bytes: int

    @property
    def fits(self) -> bool:
        return self.plan.seconds <= self.limit_s and self.plan.memory_bytes <= self.limit_bytes

    def __str__(self) -> str:
        """``the program (emu-mps, 24 atoms, 3000 ns: about 90 s and 0.6 GB (estimate,
        approximate)) is over this kernel's emulation limit (1 min, 7.8 GB)``."""
        limits = f"{format_duration(self.limit_s)}, {self.limit_bytes / 1e9:.1f} GB"
        return (
            f"the program ({self.plan.describe()}) is over this kernel's emulation limit ({limits})"
        )


def kernel_fit(
    program: Program,
    limit_s: float | None = None,
    limit_mb: int | None = None,
    machine_bytes: int | None = None,
) -> KernelFit:
    """``program``'s emulation plan (:func:`qhpc_lab.emulators.plan`; ProgramError where the
    engines cannot read it) against ``limit_s`` (default :data:`KERNEL_LIMIT_S`) and
    ``limit_mb`` (default :data:`KERNEL_MEMORY_SHARE` of ``machine_bytes``, this machine's
    memory when not given)."""
    from qhpc_lab import emulators

    if limit_mb is not None:
        limit_bytes = limit_mb * 2**20
    else:
        if machine_bytes is None:
            import psutil

            machine_bytes = psutil.virtual_memory().total
        limit_bytes = int(KERNEL_MEMORY_SHARE * machine_bytes)
    limit = KERNEL_LIMIT_S if limit_s is None else limit_s
    return KernelFit(emulators.plan(program), limit, limit_bytes)
