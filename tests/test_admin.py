"""Operator controls: policy settings at run time (kept across restarts) and accounting."""

from __future__ import annotations

import contextlib
import json
import pwd
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from qhpc_lab.scheduler.auth import make_token
from qhpc_lab.scheduler.config import SchedulerConfig
from qhpc_lab.scheduler.policy import PolicyConfig
from tests.support.admin_cli import qhpc_admin
from tests.support.daemons import Daemon, daemon, free_port
from tests.support.identities import OTHER, SECRET, USER, auth_header
from tests.support.in_process import in_process, scheduler_config
from tests.support.polling import wait_for_status


@pytest.mark.anyio
async def test_policy_settings_change_at_run_time_and_survive_a_restart(tmp_path: Path) -> None:
    config = scheduler_config(tmp_path)
    async with in_process(config) as api:
        assert (await api.user.get("/admin/policy")).status_code == 403
        before = (await api.admin.get("/admin/policy")).json()
        assert before["class_priority"] == {"development": 30, "test": 20, "production": 10}
        changed = await api.admin.put(
            "/admin/policy",
            json={"class_priority": {"production": 40}, "default_job_class": "test"},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["class_priority"]["production"] == 40
        assert changed.json()["class_priority"]["development"] == 30
        bad = await api.admin.put("/admin/policy", json={"class_priority": {"urgent": 1}})
        assert bad.status_code == 422 and bad.json()["rule"] == "class_priority"
        bad = await api.admin.put("/admin/policy", json={"default_job_class": "urgent"})
        assert bad.status_code == 422 and bad.json()["rule"] == "default_job_class"
        bad = await api.admin.put("/admin/policy", json={"aging_per_chunk": -1})
        assert bad.status_code == 422
    async with in_process(config) as api:
        kept = (await api.admin.get("/admin/policy")).json()
        assert kept["class_priority"]["production"] == 40
        assert kept["default_job_class"] == "test"


@pytest.mark.anyio
async def test_accounting_per_user_and_per_slurm_job(tmp_path: Path, sequence_json: str) -> None:
    async with in_process(scheduler_config(tmp_path)) as api:
        started = time.time()
        session = (
            await api.admin.post("/sessions", json={"user_id": USER, "slurm_job_id": "4242"})
        ).json()
        header = {"X-Warden-Session": session["id"]}
        mine = [
            (
                await api.user.post(
                    "/jobs", json={"sequence": sequence_json, "shots": n}, headers=header
                )
            ).json()
            for n in (30, 70)
        ]
        theirs = await api.other.post("/jobs", json={"sequence": sequence_json, "shots": 5})
        for job in [*mine, theirs.json()]:
            client = api.user if job["user_id"] == USER else api.other
            await wait_for_status(client, job["id"], timeout=180)

        assert (await api.user.get("/admin/accounting")).status_code == 403
        by_user = (await api.admin.get("/admin/accounting", params={"since": started})).json()
        rows = {row["key"]: row for row in by_user["rows"]}
        assert rows[USER]["jobs"] == 2 and rows[USER]["shots"] == 100
        assert rows[USER]["done"] == 2
        assert rows[OTHER]["shots"] == 5
        assert rows[USER]["qpu_seconds"] > 0 and rows[USER]["max_wait_s"] >= 0

        by_job = (
            await api.admin.get("/admin/accounting", params={"since": started, "by": "slurm_job"})
        ).json()
        assert {row["key"]: row["shots"] for row in by_job["rows"]} == {"4242": 100, None: 5}

        later = (
            await api.admin.get("/admin/accounting", params={"since": time.time() + 60})
        ).json()
        assert later["rows"] == []
        bad = await api.admin.get("/admin/accounting", params={"by": "month"})
        assert bad.status_code == 422


def _login_name(uid: str) -> str:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except KeyError:
        return uid


@pytest.mark.parametrize(
    "toml",
    [
        "[scheduler]\naging_per_chunk = 2\nclass_priority = {test = 25}\n",
        "[scheduler]\nport = 1\n[scheduler.policy]\naging_per_chunk = 2\n"
        "class_priority = {test = 25}\n",
        "[scheduler]\nport = 1\n[policy]\naging_per_chunk = 2.0\nclass_priority = {test = 25}\n",
        "aging_per_chunk = 2\n[policy]\nclass_priority = {test = 25}\n",
    ],
    ids=["flat", "scheduler.policy", "policy", "no scheduler table"],
)
def test_policy_settings_load_from_a_file_flat_or_nested(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str
) -> None:
    path = tmp_path / "scheduler.toml"
    path.write_text(toml)
    monkeypatch.setenv("QHPC_USAGE_HALF_LIFE_S", "90")
    monkeypatch.setenv("QHPC_DEFAULT_JOB_CLASS", "test")
    config = SchedulerConfig.load(str(path), min_calibration_age_s=5.0, aging_per_chunk=None)
    assert config.policy == PolicyConfig(
        class_priority={"development": 30, "test": 25, "production": 10},
        aging_per_chunk=2.0,
        usage_half_life_s=90.0,
        min_calibration_age_s=5.0,
        default_job_class="test",
    )


def test_policy_settings_from_variables_and_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QHPC_CONFIG", raising=False)
    monkeypatch.setenv("QHPC_CLASS_PRIORITY", "production=40,development=1")
    assert SchedulerConfig.load().policy.class_priority == {
        "development": 1,
        "test": 20,
        "production": 40,
    }
    monkeypatch.delenv("QHPC_CLASS_PRIORITY")
    twice = tmp_path / "twice.toml"
    twice.write_text("[scheduler]\naging_per_chunk = 1\n[scheduler.policy]\naging_per_chunk = 2\n")
    for path, overrides, words in [
        (None, {"aging_per_chunk": -1.0}, "aging_per_chunk must be at least 0"),
        (None, {"default_job_class": "urgent"}, "default_job_class must be one of"),
        (None, {"class_priority": {"urgent": 1}}, "unknown keys in class_priority"),
        (None, {"agin_per_chunk": 1.0}, "unknown scheduler settings: agin_per_chunk"),
        (str(twice), {}, "both flat and in [policy]: aging_per_chunk"),
    ]:
        with pytest.raises(ValueError, match=re.escape(words)):
            SchedulerConfig.load(path, **overrides)


def test_a_settings_file_mistake_stops_the_daemon_naming_it(tmp_path: Path) -> None:
    """A quoted number, a key above the [scheduler] line or a setting's table outside it
    would be a setting silently not applied: each is refused; other programs' tables pass."""
    for text, words in [
        ('[scheduler]\nqpu_overhead_share = "0.05"\n', "qpu_overhead_share must be a number"),
        ('[scheduler]\nmax_connections = "1000"\n', "max_connections must be a whole number"),
        ('ha = "yes"\n', "ha must be true or false"),
        ("port = 1\n[scheduler]\nhost = '::1'\n", "port: outside the [scheduler] table"),
        ("[scheduler]\n[class_limits.test]\nmax_shots = 5\n", "class_limits: outside the"),
        ('[policy]\naging_per_chunk = "2"\n', "aging_per_chunk must be a number"),
    ]:
        path = tmp_path / "scheduler.toml"
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(words)):
            SchedulerConfig.load(str(path))
    path.write_text('[scheduler]\nport = 8007\nadmin_uids = [0, 1000]\n[slurm]\nlicence = "q"\n')
    loaded = SchedulerConfig.load(str(path))
    assert loaded.port == 8007 and loaded.admin_uids == ("0", "1000")


def test_admin_cli_operates_a_running_scheduler(tmp_path: Path, sequence_json: str) -> None:
    admin_token = make_token(SECRET, 0, admin=True)
    flags = ("--class-priority", "development=33", "--usage-half-life", "300")
    with daemon(tmp_path, *flags) as server:
        _operate(server, admin_token, sequence_json)


def _operate(server: Daemon, admin_token: str, sequence_json: str) -> None:
    shown = json.loads(qhpc_admin(server.url, admin_token, "--json", "policy").stdout)
    assert shown["class_priority"] == {"development": 33, "test": 20, "production": 10}
    assert shown["usage_half_life_s"] == 300

    status = qhpc_admin(server.url, admin_token, "--json", "status")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["state"] == "ONLINE" and shown["name"] == "QHPC-Test"
    assert shown["limits"]["max_atom_num"] == 16 and shown["limits"]["max_runs"] == 10000

    closed = qhpc_admin(
        server.url, admin_token, "--json", "maintenance", "on", "--message", "laser swap"
    )
    assert json.loads(closed.stdout) == {"is_accessible": False, "message": "laser swap"}
    refused = httpx.post(
        f"{server.url}/jobs",
        json={"sequence": sequence_json, "shots": 5},
        headers=auth_header(USER),
    )
    assert refused.status_code == 503 and "laser swap" in refused.json()["detail"]
    qhpc_admin(server.url, admin_token, "maintenance", "off")

    changed = qhpc_admin(
        server.url,
        admin_token,
        "--json",
        "policy",
        "--set",
        "class_priority.test=25",
        "--set",
        "aging_per_chunk=2",
    )
    settings = json.loads(changed.stdout)
    assert settings["class_priority"]["test"] == 25 and settings["aging_per_chunk"] == 2

    job = httpx.post(
        f"{server.url}/jobs",
        json={"sequence": sequence_json, "shots": 9000},
        headers=auth_header(USER),
        timeout=120,
    ).json()
    canceled = qhpc_admin(server.url, admin_token, "--json", "cancel", str(job["id"]))
    assert json.loads(canceled.stdout)["status"] == "CANCELED"
    listed = qhpc_admin(server.url, admin_token, "jobs").stdout.splitlines()
    assert listed[0].split() == ["id", "user", "class", "status", "shots", "name"]
    assert "CANCELED" in listed[1]

    accounting = qhpc_admin(server.url, admin_token, "accounting", "--since", "2020-01-01")
    assert accounting.returncode == 0
    assert accounting.stdout.split()[0] == "user"
    assert _login_name(USER) in accounting.stdout.split()  # a name where the host knows the uid

    denied = qhpc_admin(server.url, make_token(SECRET, USER), "drain")
    assert denied.returncode == 1 and "403" in denied.stderr and "not an admin" in denied.stderr

    # what an operator reads: tables and key: value lines, not JSON
    human = qhpc_admin(server.url, admin_token, "status").stdout.splitlines()
    assert human[0].startswith("ONLINE · calibrated") and "limits.max_runs: 10000" in human
    admin = {"Authorization": f"Bearer {admin_token}"}
    opened = [
        httpx.post(
            f"{server.url}/sessions", json={"user_id": USER, "slurm_job_id": job}, headers=admin
        ).json()["id"]
        for job in ("71", "72")
    ]
    httpx.delete(f"{server.url}/sessions/{opened[0]}", headers=admin).raise_for_status()
    open_ = qhpc_admin(server.url, admin_token, "sessions").stdout.splitlines()
    every = qhpc_admin(server.url, admin_token, "sessions", "--all").stdout.splitlines()
    assert open_[0].split()[:3] == ["session", "user", "slurm"] and len(open_) == 2, open_
    assert open_[1].split()[2] == "72" and len(every) == 3, every


def test_admin_cli_says_what_to_do_when_nothing_answers() -> None:
    """An error on stderr naming the address tried and how to give another one."""
    answer = qhpc_admin(f"http://127.0.0.1:{free_port()}", "a-token", "status")
    assert answer.returncode == 1 and answer.stdout == ""
    assert "no scheduler answers at http://127.0.0.1:" in answer.stderr
    assert "--url URL or $QHPC_SCHEDULER_URL" in answer.stderr


def test_admin_status_watch_follows_the_event_stream(server, sequence_json: str) -> None:
    """``qhpc admin status --watch`` prints a line per change: a user's jobs entering the queue
    show at once, the running one apart from the waiting ones."""
    admin_token = make_token(SECRET, 0, admin=True)
    args = [sys.executable, "-m", "qhpc_lab.cli", "admin", "--url", server.url]
    args += ["--auth", "token", "--token", admin_token, "status", "--watch"]
    watcher = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(target=lambda: [lines.put(x) for x in watcher.stdout], daemon=True).start()

    def until(text: str) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=1)
                if text in line:
                    return line
        raise AssertionError(f"no line with {text!r}")

    jobs: list[int] = []
    try:
        until("stream connected")
        until("ONLINE")
        for _ in range(2):
            answer = httpx.post(
                f"{server.url}/jobs",
                json={"sequence": sequence_json, "shots": 9000},
                headers=auth_header(USER),
                timeout=120,
            )
            jobs.append(answer.json()["id"])
        assert "running production" in until("1 waiting (development 0, test 0, production 1)")
    finally:
        for job_id in jobs:
            httpx.post(f"{server.url}/jobs/{job_id}/cancel", headers=auth_header(USER))
        watcher.terminate()
        watcher.wait(10)
