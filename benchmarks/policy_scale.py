"""Policy cost against queue length: the linear policy functions against RankedQueue.

For each queue length and session count it builds one queue (jobs of the three classes spread
over the sessions, every session with some recorded usage so that fair-share keys differ, as
they do once the daemon has run a while), then times, median of repeated calls:

- a decision: ``policy.decide(list(queue), ...)`` (what the dispatcher does today) against
  ``RankedQueue.decide``;
- one job's queue position and end estimate: ``policy.estimates(list(queue), ...)``
  (computed for the whole queue to answer one job) against ``RankedQueue.position`` for a
  job in the middle;
- with ``--bounded``, a share of the jobs carries a calibration-age bound they are past, so
  decisions skip them and end estimates replay them;
- RankedQueue's bookkeeping per event: ``add`` and ``remove`` of a job, ``update`` after a
  chunk, and ``record_chunk`` (which re-sorts the accounts).

Prints a markdown table and the load average. docs/benchmarks.md#policy-cost-at-scale has
the results and the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import time
from collections.abc import Callable

from qhpc_lab.qpu import DeviceState
from qhpc_lab.scheduler import policy
from qhpc_lab.scheduler.policy import DeviceView, PolicyConfig, QueuedJob
from qhpc_lab.scheduler.ranking import RankedQueue

DEVICE = DeviceView(
    state=DeviceState.ONLINE,
    calibrated_at=0.0,
    calibration_interval_s=300.0,
    calibration_duration_s=10.0,
    time_per_shot_s=0.01,
    chunk_shots=100,
)
"""The ``demo`` profile's timings; each run calibrates it 100 s before its clock."""


def median_us(call: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def build(
    jobs: int, sessions: int, bounded: float, rng: random.Random
) -> tuple[list[QueuedJob], RankedQueue]:
    config = PolicyConfig()
    queue = RankedQueue(config)
    for s in range(sessions):
        queue.set_slots(f"s{s}", 1 + s % 4)
    for s in range(sessions):  # distinct usage per account
        chunk = QueuedJob(-1, "u", f"s{s}", "production", 100, 0, 0.0)
        queue.record_chunk(chunk, 10.0 + s, 10.5 + s + rng.random())
    classes = rng.choices(policy.JOB_CLASSES, weights=(1, 2, 7), k=jobs)
    queued = [
        QueuedJob(
            id=n + 1,
            user_id=f"u{n % sessions}",
            session_id=f"s{rng.randrange(sessions)}",
            job_class=classes[n],
            shots=rng.randint(100, 1000),
            shots_done=0,
            created_at=n * 0.01,
            max_calibration_age_s=60.0 if rng.random() < bounded else None,
        )
        for n in range(jobs)
    ]
    for job in queued:
        queue.add(job)
    return queued, queue


def measure(jobs: int, sessions: int, bounded: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    queued, queue = build(jobs, sessions, bounded, rng)
    now = jobs * 0.01 + 200.0
    device = dataclasses.replace(DEVICE, calibrated_at=now - 100.0)  # mid-window
    slots, usage, config = dict(queue.slots), queue.usage, queue.config
    repeat_old = max(5, min(200, 200_000 // jobs))
    middle = queue.ranked(device, now)[jobs // 2].id
    assert queue.decide(device, now) == policy.decide(queued, slots, device, now, config, usage)
    expected = policy.estimates(queued, device, now, config, slots, usage)[middle]
    position, eta = queue.position(middle, device, now)  # end estimates: docs/policy.md, rounding
    assert position == expected[0] and abs(eta - expected[1]) <= device.calibration_duration_s
    result = {
        "decide_old": median_us(
            lambda: policy.decide(list(queued), slots, device, now, config, usage), repeat_old
        ),
        "decide_new": median_us(lambda: queue.decide(device, now), 500),
        "position_old": median_us(
            lambda: policy.estimates(list(queued), device, now, config, slots, usage)[middle],
            repeat_old,
        ),
        "position_new": median_us(lambda: queue.position(middle, device, now), 500),
    }
    sample = rng.sample(queued, min(300, jobs))
    adds, removes, updates = [], [], []
    for job in sample:
        start = time.perf_counter_ns()
        queue.remove(job.id)
        removes.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        queue.add(job)
        adds.append(time.perf_counter_ns() - start)
        ran = dataclasses.replace(job, shots_done=100)
        start = time.perf_counter_ns()
        queue.update(ran)
        updates.append(time.perf_counter_ns() - start)
        queue.update(job)
    result["add"] = statistics.median(adds) / 1000
    result["remove"] = statistics.median(removes) / 1000
    result["update"] = statistics.median(updates) / 1000
    chunk_at = [now]

    def record() -> None:
        chunk_at[0] += 1.0
        queue.record_chunk(sample[0], chunk_at[0] - 1.0, chunk_at[0])

    result["record_chunk"] = median_us(record, 100)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10, 100, 1000, 10_000, 50_000])
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 100])
    parser.add_argument(
        "--bounded",
        type=float,
        default=0.0,
        help="share of jobs with a 60 s calibration-age bound, past it at the measured instant",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.perf_counter()
    print(
        "| queued | sessions | decide, policy (µs) | decide, RankedQueue (µs) | ratio "
        "| position+end estimate, policy (µs) | position+end estimate, RankedQueue (µs) | ratio "
        "| add (µs) | remove (µs) | update (µs) | record_chunk (µs) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sessions in args.sessions:
        for jobs in args.jobs:
            r = measure(jobs, sessions, args.bounded, args.seed)
            print(
                f"| {jobs} | {sessions} | {r['decide_old']:.1f} | {r['decide_new']:.1f} "
                f"| {r['decide_old'] / r['decide_new']:.0f}× "
                f"| {r['position_old']:.1f} | {r['position_new']:.1f} "
                f"| {r['position_old'] / r['position_new']:.0f}× "
                f"| {r['add']:.1f} | {r['remove']:.1f} | {r['update']:.1f} "
                f"| {r['record_chunk']:.1f} |",
                flush=True,
            )
    load_after = os.getloadavg()
    print(
        f"\nload average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} "
        f"{load_after[2]:.2f}; wall {time.perf_counter() - started:.0f} s; cores {os.cpu_count()}"
    )


if __name__ == "__main__":
    main()
