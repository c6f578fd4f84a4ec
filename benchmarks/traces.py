"""The scheduling-policy benchmark's workload traces (``benchmarks/simulate.py`` replays them).

A trace is a list of :class:`Stream`: one user's piece of work each, seeded, so that every
policy replays the same arrivals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


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
