"""A site's bounds on job classes (``class_limits``): who may use a class, the shots of one
job and how many jobs of it one user may have queued, enforced at submission with a refusal
that names the rule."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from qhpc_lab.scheduler.config import ClassLimit, SchedulerConfig
from tests.support.identities import OTHER, USER
from tests.support.in_process import in_process, scheduler_config

LIMITS = {
    "development": {"users": [OTHER], "max_shots": 100, "max_queued_per_user": 2},
    "test": {"accounts": ["chem"]},
}


async def _submit(
    client: httpx.AsyncClient, sequence: str, shots: int, job_class: str, **headers: str
) -> httpx.Response:
    body = {"sequence": sequence, "shots": shots, "job_class": job_class}
    return await client.post("/jobs", json=body, headers=headers)


@pytest.mark.anyio
async def test_class_limits_refuse_naming_the_rule(tmp_path: Path, sequence_json: str) -> None:
    async with in_process(scheduler_config(tmp_path, class_limits=LIMITS)) as api:
        await api.admin.post("/admin/drain")  # what is queued stays queued: counts are exact
        refused = await _submit(api.user, sequence_json, 10, "development")
        assert refused.status_code == 403, refused.text
        assert refused.json()["rule"] == "class_limits.development.users"
        assert f"user {USER} may not submit development jobs" in refused.json()["detail"]
        assert "uids 1001" in refused.json()["detail"]

        too_many_shots = await _submit(api.other, sequence_json, 101, "development")
        assert too_many_shots.status_code == 422, too_many_shots.text
        assert too_many_shots.json()["rule"] == "class_limits.development.max_shots"
        assert "at most 100 shots" in too_many_shots.json()["detail"]

        for _ in range(2):
            accepted = await _submit(api.other, sequence_json, 100, "development")
            assert accepted.status_code == 200, accepted.text
        third = await _submit(api.other, sequence_json, 10, "development")
        assert third.status_code == 429, third.text
        assert third.json()["rule"] == "class_limits.development.max_queued_per_user"
        assert "has 2 development jobs queued; this site allows 2" in third.json()["detail"]
        other_class = await _submit(api.other, sequence_json, 500, "production")
        assert other_class.status_code == 200, other_class.text  # an unbounded class

        # 'test' is for the Slurm account chem: a session of it, not the user, decides
        assert (await _submit(api.user, sequence_json, 10, "test")).status_code == 403
        session = await api.admin.post(
            "/sessions", json={"user_id": USER, "slurm_job_id": "5", "slurm_account": "chem"}
        )
        in_chem = await _submit(
            api.user, sequence_json, 10, "test", **{"X-Warden-Session": session.json()["id"]}
        )
        assert in_chem.status_code == 200, in_chem.text

        # an admin is not bound (the operator's own runs)
        assert (await _submit(api.admin, sequence_json, 5000, "development")).status_code == 200

        # a job that ends frees its place in the class's count
        job_id = accepted.json()["id"]
        assert (await api.other.post(f"/jobs/{job_id}/cancel")).status_code == 200
        again = await _submit(api.other, sequence_json, 10, "development")
        assert again.status_code == 200, again.text


def test_class_limits_settings_are_checked_when_they_load(tmp_path: Path) -> None:
    """A typo stops the daemon at start, naming the table and the key, never silently opens
    a class the site meant to bound."""
    for limits, words in [
        ({"urgent": {}}, "class_limits.urgent: no such job class"),
        ({"development": {"max_shot": 5}}, "unknown keys max_shot"),
        ({"development": {"max_shots": -1}}, "max_shots must be a whole number"),
        ({"development": {"users": "alice"}}, "users must be a list"),
        ({"development": {"users": ["no-such-user-here"]}}, "no user 'no-such-user-here'"),
    ]:
        with pytest.raises(ValueError, match=words):
            scheduler_config(tmp_path, class_limits=limits)
    config_file = tmp_path / "scheduler.toml"
    config_file.write_text(
        '[scheduler.class_limits.development]\nusers = ["root", "1001"]\nmax_shots = 200\n'
    )
    loaded = SchedulerConfig.load(str(config_file)).class_limits
    assert loaded == {"development": ClassLimit(users=("0", "1001"), max_shots=200)}


def test_cells_get_the_class_the_site_gives_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cell_job_class``: a ``%%qpu`` cell without ``--class`` gets the site's class for
    cells (served in ``/device``); ``--class`` still wins; the Python API sends none (the
    scheduler's ``default_job_class``)."""
    from IPython.core.interactiveshell import InteractiveShell

    from qhpc_lab.client import Client
    from qhpc_lab.programs import Program
    from qhpc_lab.scheduler.auth import make_token
    from tests.support.client_env import lab_env
    from tests.support.daemons import daemon
    from tests.support.identities import SECRET, auth_header
    from tests.support.magics import magics_on, run
    from tests.support.programs import pulser_sequence_json

    with daemon(tmp_path, "--cell-job-class", "test") as server:
        assert httpx.get(f"{server.url}/device").json()["cell_job_class"] == "test"
        env = lab_env(server.url, QHPC_TOKEN=make_token(SECRET, USER))
        client = Client(environ={"HOME": str(tmp_path), **env})
        shell = InteractiveShell.instance()
        try:
            magics_on(shell, client)
            shell.user_ns["program"] = Program("pulser", pulser_sequence_json(), 10)
            for cell, expected in [
                ("%%qpu --no-wait -o job\nprogram", "test"),
                ("%%qpu --no-wait --class production -o job\nprogram", "production"),
            ]:
                success, shown = run(shell, capsys, cell)
                assert success, shown
                job_id = shell.user_ns["job"].id
                view = httpx.get(f"{server.url}/jobs/{job_id}", headers=auth_header(USER))
                assert view.json()["job_class"] == expected, (cell, view.json())
            from_python = client.submit(shell.user_ns["program"])
            view = httpx.get(f"{server.url}/jobs/{from_python.id}", headers=auth_header(USER))
            assert view.json()["job_class"] == "production"
        finally:
            client.close()
