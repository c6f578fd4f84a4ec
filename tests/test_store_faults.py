"""The dispatcher rides out database faults and says so meanwhile (docs/scheduler.md, "Faults").

Each test runs the real daemon, starts a job long enough to be mid-run, then breaks the store
under it: another process holds the SQLite file's write lock, the disk under it fills up, or the
PostgreSQL server restarts with every connection cut. While the store is gone ``/health`` keeps
answering, and fails with the reason; submissions get a 503 with ``Retry-After``. Once it is back
the dispatcher resumes by itself and every job ends with exactly its shots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.daemons import Daemon, daemon
from tests.support.identities import USER, auth_header
from tests.support.polling import poll_until
from tests.support.postgres import restart_postgres

SHOTS = 4000
"""2 s of device time on the test profile (0.5 ms a shot), 40 chunks: long enough to break the
store between two of them."""
WAIT_S = 90


def client(handle: Daemon) -> httpx.Client:
    return httpx.Client(base_url=handle.url, headers=auth_header(USER), timeout=30)


def mid_run(api: httpx.Client, sequence_json: str) -> int:
    job = api.post("/jobs", json={"sequence": sequence_json, "shots": SHOTS})
    assert job.status_code == 200, job.text
    job_id = job.json()["id"]

    def running() -> bool:
        view = api.get(f"/jobs/{job_id}").json()
        return view["status"] == "RUNNING" and view["shots_done"] > 0

    poll_until(running, "the job to be mid-run", timeout=WAIT_S)
    return job_id


def finishes_exactly(api: httpx.Client, job_id: int) -> dict[str, Any]:
    view = poll_until(
        lambda: (v := api.get(f"/jobs/{job_id}").json())["status"] in ("DONE", "ERROR") and v,
        "the job to finish",
        timeout=WAIT_S,
    )
    assert view["status"] == "DONE", view
    assert view["shots_done"] == SHOTS
    assert sum(json.loads(view["results"])["counter"].values()) == SHOTS
    return view


class HealthProbe:
    """``/health`` every 50 ms from another thread: its latencies and what it answered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.answers: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.wait(0.05):
                started = time.perf_counter()
                response = http.get("/health")
                self.latencies.append(time.perf_counter() - started)
                self.answers.append({"code": response.status_code, **response.json()})

    def stalled(self) -> list[dict[str, Any]]:
        return [a for a in self.answers if a["code"] == 503]


@pytest.fixture
def sqlite_daemon(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    db = tmp_path / "scheduler.db"
    with daemon(tmp_path, "--db", f"sqlite:///{db}") as handle:
        yield handle, db


def test_a_locked_sqlite_file_stalls_dispatch_visibly_and_it_resumes(
    sqlite_daemon: tuple[Daemon, Path], sequence_json: str
) -> None:
    handle, db = sqlite_daemon
    with client(handle) as api, HealthProbe(handle.url) as probe:
        job_id = mid_run(api, sequence_json)
        # Another process takes the write lock (longer than SQLite's busy timeout) and holds
        # it until told to let go (or for 60 s at most).
        locker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import select, sqlite3, sys;"
                " c = sqlite3.connect(sys.argv[1], isolation_level=None);"
                " c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True);"
                " select.select([sys.stdin], [], [], 60)",
                str(db),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            locked_at = time.monotonic()
            poll_until(probe.stalled, "/health to report the stall", timeout=15)
            refused = api.post("/jobs", json={"sequence": sequence_json, "shots": 10})
            assert refused.status_code == 503, refused.text
            assert refused.json()["rule"] == "store"
            assert int(refused.headers["Retry-After"]) > 0
            assert api.get("/device").json()["dispatcher"]["reason"] == "store_unavailable"
            locked_for = time.monotonic() - locked_at
            assert locked_for > 5.0  # past the busy timeout: the stall was real
        finally:
            assert locker.stdin is not None
            locker.stdin.write("go\n")
            locker.stdin.close()
            locker.wait(30)
        finishes_exactly(api, job_id)
        poll_until(
            lambda: probe.answers and probe.answers[-1]["code"] == 200,
            "/health to recover",
            timeout=WAIT_S,
        )
        after = api.post("/jobs", json={"sequence": sequence_json, "shots": 10})
        assert after.status_code == 200, after.text
    stalled = probe.stalled()
    assert stalled[0]["dispatcher"]["reason"] == "store_unavailable"
    assert "locked" in stalled[0]["dispatcher"]["detail"]
    # The store waits happen in worker threads: the event loop kept answering.
    assert max(probe.latencies) < 2.0, max(probe.latencies)
    assert "dispatcher stalled (store_unavailable)" in handle.log.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_stalls_dispatch_and_freeing_space_resumes_it(
    tmp_path: Path, sequence_json: str
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    try:
        db = disk / "scheduler.db"
        with (
            daemon(tmp_path, "--db", f"sqlite:///{db}") as handle,
            client(handle) as api,
            HealthProbe(handle.url) as probe,
        ):
            job_id = mid_run(api, sequence_json)
            filler = disk / "filler"
            with filler.open("wb") as out:  # until the disk refuses: ENOSPC
                try:
                    while True:
                        out.write(b"\0" * 65536)
                        out.flush()
                except OSError:
                    pass
            # Keep writing jobs so that the database must grow (the WAL may have room left).
            for _ in range(200):
                if probe.stalled():
                    break
                api.post("/jobs", json={"sequence": sequence_json, "shots": 10, "name": "x" * 200})
                time.sleep(0.02)
            poll_until(probe.stalled, "/health to report the full disk", timeout=30)
            filler.unlink()
            finishes_exactly(api, job_id)
            poll_until(
                lambda: probe.answers[-1]["code"] == 200, "/health to recover", timeout=WAIT_S
            )
        assert any("full" in (a["dispatcher"]["detail"] or "") for a in probe.stalled())
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.postgres
def test_a_restarted_postgresql_stalls_dispatch_and_it_resumes(
    tmp_path: Path, fresh_postgres_url: str, sequence_json: str
) -> None:
    with (
        daemon(tmp_path, "--db", fresh_postgres_url) as handle,
        client(handle) as api,
        HealthProbe(handle.url) as probe,
    ):
        job_id = mid_run(api, sequence_json)
        restart_postgres(down_s=3.0)
        finishes_exactly(api, job_id)
        poll_until(lambda: probe.answers[-1]["code"] == 200, "/health to recover", timeout=WAIT_S)
        after = api.post("/jobs", json={"sequence": sequence_json, "shots": 10})
        assert after.status_code == 200, after.text
    assert probe.stalled(), "the outage never showed on /health"
    assert probe.stalled()[0]["dispatcher"]["reason"] == "store_unavailable"
    assert max(probe.latencies) < 2.0, max(probe.latencies)
