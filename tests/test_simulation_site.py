"""The simulation's site trace (a reservation and a quota): its two hard guarantees, checked
from what the QPU recorded on a shortened trace (docs/benchmarks.md reports the full one)."""

from __future__ import annotations

import itertools
import random

import pytest

from benchmarks import simulate
from qhpc_lab.qpu import DeviceProfile


@pytest.mark.parametrize("seed", [1, 2])
def test_the_window_is_the_owners_and_the_quota_is_never_exceeded(seed):
    profile = DeviceProfile.load("fresnel-like")
    site = simulate.make_site_trace(random.Random(seed), 3.0)
    window, quota = site.reservation, site.quota
    run = simulate.Simulation(
        profile,
        site.streams,
        "site",
        3600.0,
        sessions=True,
        reservations=[window],
        quotas=[quota],
    ).play()
    owned = {job_id for job_id, record in run.jobs.items() if window.owns(record.job)}
    assert owned, "the owner submitted work"
    inside = [(s, e, j) for s, e, j in run.chunks if window.overlaps(s, e)]
    assert inside, "the owner's work ran in its window"
    assert all(job_id in owned for _, _, job_id in inside)
    # Every job of the quota's user was submitted in one day: its chunks' QPU time is its use.
    budgeted = {j for j, r in run.jobs.items() if r.job.user_id == quota.subject}
    used = sum(e - s for s, e, j in run.chunks if j in budgeted)
    assert run.refused > 0, "the campaign asked for more than its budget"
    assert used <= quota.budget * (1 + 1e-9)
    assert max(run.quota_use.values()) <= quota.budget * (1 + 1e-9)
    assert all(r.finished_at is not None for r in run.jobs.values())


def test_every_chunk_pays_the_profiles_job_setup_and_is_charged_its_shots_alone():
    """Each chunk is one QPU job: the profile's setup passes before its first shot, unused."""
    profile = DeviceProfile.load("fresnel-like")
    assert profile.job_setup_s > 0
    streams = simulate.make_trace(random.Random(3), 1.0)
    run = simulate.Simulation(profile, streams, "ours", 3600.0).play()
    chunks = sorted(run.chunks)
    assert len(chunks) > 10
    gaps = [start - end for (_, end, _), (start, _, _) in itertools.pairwise(chunks)]
    assert min(gaps) >= profile.job_setup_s - 1e-9
    for record in run.jobs.values():
        assert record.qpu_seconds == pytest.approx(record.shots_done * profile.time_per_shot_s)
    assert run.busy_s == pytest.approx(run.shots * profile.time_per_shot_s)
