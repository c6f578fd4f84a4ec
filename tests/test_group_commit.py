"""Group commit (docs/benchmarks.md, "group commit"): submissions that arrive together are
written in one transaction, each still checked (quota, idempotency) and answered its own
result, exactly once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from tests.support.identities import USER
from tests.support.in_process import in_process, scheduler_config

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
BUDGET = 10
"""USER's shots a day; OTHER has no quota."""
KEYS = 20
"""USER's distinct submissions (one shot each, each its idempotency key); OTHER sends as many."""
RETRIES = 6
"""USER's submissions that repeat the key of an earlier one, sent in the same burst."""


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_grouped_submissions_from_two_users_are_each_answered_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, sequence_json: str
) -> None:
    db = {} if backend == "sqlite" else {"db": request.getfixturevalue("fresh_postgres_url")}
    async with in_process(scheduler_config(tmp_path, **db)) as api:
        quota = {"kind": "user", "subject": USER, "unit": "shots", "budget": BUDGET}
        assert (await api.admin.put("/admin/quotas", json={**quota, "period": "day"})).is_success
        body = {"sequence": sequence_json, "shots": 1}
        warm = await api.other.post("/jobs", json=body)  # the sequence validated once
        assert warm.status_code == 200, warm.text

        def mine(key: int) -> asyncio.Task[httpx.Response]:
            headers = {"Idempotency-Key": f"k{key}"}
            return asyncio.ensure_future(api.user.post("/jobs", json=body, headers=headers))

        def theirs() -> asyncio.Task[httpx.Response]:
            return asyncio.ensure_future(api.other.post("/jobs", json=body))

        user_sent = [*range(KEYS), *range(RETRIES)]
        burst = [call for key in range(KEYS) for call in (mine(key), theirs())]
        burst += [mine(key) for key in range(RETRIES)]
        answers = await asyncio.gather(*burst)
        user_answers = [a for i, a in enumerate(answers) if i % 2 == 0 and i < 2 * KEYS]
        user_answers += answers[2 * KEYS :]
        other_answers = [a for i, a in enumerate(answers) if i % 2 == 1 and i < 2 * KEYS]

        assert [a.status_code for a in other_answers] == [200] * KEYS
        other_ids = {a.json()["id"] for a in other_answers}
        assert len(other_ids) == KEYS
        accepted: dict[int, int] = {}  # key → job id: a retried key is answered its first job
        for key, answer in zip(user_sent, user_answers, strict=True):
            if answer.status_code == 200:
                assert accepted.setdefault(key, answer.json()["id"]) == answer.json()["id"]
            else:
                refused = answer.json()
                assert (answer.status_code, refused["rule"], refused["used"]) == (403, "quota", 10)
        assert len(accepted) == BUDGET
        assert len(set(accepted.values())) == BUDGET

        user_jobs = {job["id"] for job in (await api.user.get("/jobs")).json()}
        assert user_jobs == set(accepted.values())
        listed = {job["id"] for job in (await api.other.get("/jobs")).json()}
        assert listed == other_ids | {warm.json()["id"]}
        metrics = (await api.anonymous.get("/metrics")).text
        groups = float(re.search(r"qhpc_submission_group_size_count (\S+)", metrics)[1])
        written = float(re.search(r"qhpc_submission_group_size_sum (\S+)", metrics)[1])
        assert written == 1 + len(answers)  # every submission reached the store once
        assert groups < written  # some went together
