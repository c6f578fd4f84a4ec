"""The scheduling-policy benchmark's workload traces (``benchmarks/simulate.py`` replays them).

A trace is a list of :class:`Stream`: one user's piece of work each, seeded, so that every
policy replays the same arrivals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from qhpc_lab.scheduler.quotas import Quota
from qhpc_lab.scheduler.reservations import Reservation


@dataclass(frozen=True)
class Stream:
    """One user's piece of work, and the unit a Slurm job would hold the QPU for.

    ``closed``: an interactive loop, each job sent ``think_s`` after the previous result;
    otherwise every job is submitted at ``start_s``.
    """

    name: str
    user_id: str
    session_id: str | None
    slots: int
    job_class: str
    start_s: float
    shots: tuple[int, ...]
    think_s: tuple[float, ...] = ()
    closed: bool = False
    max_calibration_age_s: float | None = None
    slurm_account: str | None = None
    """The Slurm account of the stream's session (who a reservation or a quota can be for)."""


def make_trace(rng: random.Random, hours: float) -> list[Stream]:
    """The mixed workload, arrivals spread over ``hours``; production alone saturates the QPU."""
    horizon = hours * 3600
    streams = [
        Stream(
            name=f"campaign-{i + 1}",
            user_id=f"prod{i + 1}",
            session_id=f"prod-session-{i + 1}",
            slots=slots,
            job_class="production",
            start_s=start,
            shots=tuple(rng.randint(500, 1500) for _ in range(30)),
            max_calibration_age_s=age,
        )
        for i, (start, slots, age) in enumerate(
            [(0.0, 2, None), (0.1875 * horizon, 2, 3600.0), (0.375 * horizon, 1, None)]
        )
    ]
    for user in range(4):
        for loop in range(2):
            iterations = 30
            streams.append(
                Stream(
                    name=f"loop-{user + 1}.{loop + 1}",
                    user_id=f"dev{user + 1}",
                    session_id=f"dev-session-{user + 1}.{loop + 1}",
                    slots=1,
                    job_class="development",
                    start_s=rng.uniform(0, horizon - 3600),
                    shots=tuple(rng.randint(50, 200) for _ in range(iterations)),
                    think_s=tuple(rng.uniform(5, 60) for _ in range(iterations)),
                    closed=True,
                )
            )
    t = rng.expovariate(1 / 1800)
    while t < horizon:
        streams.append(
            Stream(
                name=f"test-{len(streams)}",
                user_id="ci",
                session_id=None,
                slots=1,
                job_class="test",
                start_s=t,
                shots=(rng.randint(200, 500),),
            )
        )
        t += rng.expovariate(1 / 1800)
    return streams


@dataclass(frozen=True)
class SiteTrace:
    """A trace with what an operator adds: a reservation window and a quota."""

    streams: list[Stream]
    reservation: Reservation
    quota: Quota


DEMO_ACCOUNT = "demo"
QUOTA_USER = "prod3"
QUOTA_BUDGET_S = 6600.0
"""A day's QPU-seconds for the third campaign's user: about two thirds of what its 30 jobs
of 500–1500 shots need on the ``fresnel-like`` profile (0.33 s a shot)."""


def make_site_trace(rng: random.Random, hours: float) -> SiteTrace:
    """:func:`make_trace`'s workload (the same streams for the same seed) plus a one-hour demo
    reserved for the Slurm account ``demo`` halfway through, its owner's work sent before and
    during it (a variational loop from 15 min before, a batch 5 min in, a second loop 25 min
    in), and a daily QPU-seconds quota on the third campaign's user that the campaign exceeds
    (its later jobs are refused at submission)."""
    streams = make_trace(rng, hours)
    starts_at = round(0.5 * hours * 3600)
    reservation = Reservation(1, starts_at, starts_at + 3600.0, "account", DEMO_ACCOUNT)

    def demo_loop(name: str, start_s: float) -> Stream:
        return Stream(
            name=name,
            user_id="demo1",
            session_id=f"{name}-session",
            slots=1,
            job_class="development",
            start_s=start_s,
            shots=tuple(rng.randint(50, 200) for _ in range(30)),
            think_s=tuple(rng.uniform(5, 60) for _ in range(30)),
            closed=True,
            slurm_account=DEMO_ACCOUNT,
        )

    streams.append(demo_loop("loop-demo.1", starts_at - 900.0))
    streams.append(
        Stream(
            name="demo-batch",
            user_id="demo1",
            session_id="demo-batch-session",
            slots=1,
            job_class="production",
            start_s=starts_at + 300.0,
            shots=tuple(rng.randint(500, 1500) for _ in range(4)),
            slurm_account=DEMO_ACCOUNT,
        )
    )
    streams.append(demo_loop("loop-demo.2", starts_at + 1500.0))
    quota = Quota("user", QUOTA_USER, "qpu_seconds", QUOTA_BUDGET_S, "day")
    return SiteTrace(streams, reservation, quota)


def make_flood_trace(rng: random.Random) -> list[Stream]:
    """Development work alone saturates the QPU for hours: can production and tests still run?"""
    streams = [
        Stream(
            name=f"flood-{user + 1}",
            user_id=f"dev{user + 1}",
            session_id=f"flood-session-{user + 1}",
            slots=1,
            job_class="development",
            start_s=0.0,
            shots=tuple(rng.randint(50, 200) for _ in range(100)),
            think_s=tuple(rng.uniform(0, 2) for _ in range(100)),
            closed=True,
        )
        for user in range(4)
    ]
    streams.append(
        Stream(
            name="campaign",
            user_id="prod1",
            session_id="prod-session",
            slots=2,
            job_class="production",
            start_s=600.0,
            shots=tuple(rng.randint(500, 1500) for _ in range(10)),
        )
    )
    streams += [
        Stream(f"test-{i}", "ci", None, 1, "test", 1800.0 * i, (rng.randint(200, 500),))
        for i in (1, 2, 3)
    ]
    return streams
