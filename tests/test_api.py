"""The scheduler's HTTP API: Warden compatibility, sessions, auth, bad input, extensions, events.

QRMI's ``pasqal-local`` client is strict Rust/serde: one field of the wrong type breaks it, so
the Warden routes are checked field for field and type for type.

Most tests share one in-process scheduler (``shared``, module scope): every scheduler starts an
emulator worker process that imports Pulser, which costs seconds of CPU on a shared machine.
Tests on it leave no device-wide state behind (they undo drains and cancel their long jobs);
cheap refusal tests come first so the worker warms up while they run.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.support.api import SESSION, WAIT_S, device, open_session, refused, submit
from tests.support.daemons import Daemon
from tests.support.identities import ADMIN, OTHER, USER, auth_header
from tests.support.in_process import Clients, in_process, scheduler_config
from tests.support.polling import apoll_until, poll_until, wait_for_status, wait_until_started

T = TypeVar("T")

PAYLOAD_LIMIT = 64 * 1024
"""The shared scheduler's max_payload_bytes: far below the 1 MiB default, above any program here."""
LONG_SHOTS = 5000
"""About 2.5 s on the test profile (0.5 ms a shot), 50 chunks of 100: stays active while checked."""
STATUSES = ("PENDING", "RUNNING", "DONE", "ERROR", "CANCELED")
ACTIVE = ("PENDING", "RUNNING")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so that the module-scoped ``shared`` scheduler can be async."""
    return "asyncio"


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Clients]:
    """One scheduler on the test profile for every test that leaves no device-wide state."""
    config = scheduler_config(tmp_path_factory.mktemp("shared"), max_payload_bytes=PAYLOAD_LIMIT)
    async with in_process(config) as clients:
        yield clients


def sequence_at(coordinates: list[tuple[float, float]], duration: int = 200) -> str:
    """A Pulser sequence on any register: built for MockDevice, which refuses nothing, so the
    scheduler's checks against the test device are what a test sees."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import MockDevice

    sequence = Sequence(Register.from_coordinates(coordinates, prefix="q"), MockDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(duration, 2.0, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return sequence.to_abstract_repr()


def not_found(response: httpx.Response, what: str) -> None:
    assert response.status_code == 404, response.text
    assert f"{what} not found" in response.json()["detail"]


async def idle(clients: Clients) -> dict[str, Any]:
    """Wait until nothing is queued or in flight, so that counters and depths are exact."""

    async def quiet() -> dict[str, Any] | None:
        info = await device(clients.user)
        busy = info["running"] is not None or any(info["queue_depth"].values())
        return None if busy else info

    return await apoll_until(quiet, "an idle QPU", WAIT_S)


async def cancel_all(admin: httpx.AsyncClient, jobs: list[dict[str, Any]]) -> None:
    """Cleanup: an administrator cancels jobs (a final job is returned unchanged)."""
    for job in jobs:
        response = await admin.post(f"/jobs/{job['id']}/cancel")
        assert response.status_code == 200, response.text


async def newest_job_id(admin: httpx.AsyncClient) -> int | None:
    jobs = (await admin.get("/jobs", params={"limit": 1})).json()
    return jobs[0]["id"] if jobs else None


def assert_warden_job(job: dict[str, Any]) -> None:
    """The four fields QRMI deserialises, with serde's types, plus an RFC 3339 created_at."""
    assert type(job["id"]) is int
    assert type(job["user_id"]) is str
    assert job["status"] in STATUSES
    assert job["results"] is None or type(job["results"]) is str
    assert RFC3339.fullmatch(job["created_at"]), job["created_at"]
    assert datetime.fromisoformat(job["created_at"]).tzinfo is not None


def prometheus(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition, keyed by ``name{labels}``; checks every line."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP \w+ .+|TYPE \w+ (counter|gauge|histogram))", line), line
            continue
        key, value = line.rsplit(" ", 1)
        assert re.fullmatch(r'\w+(\{\w+="[^"]*"(,\w+="[^"]*")*\})?', key), line
        samples[key] = float(value)
    return samples


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return prometheus(response.text)


# -- 3. authentication and isolation -----------------------------------------------------------

IDENTIFIED_ROUTES = [
    ("GET", "/jobs"),
    ("POST", "/jobs"),
    ("GET", "/jobs/1"),
    ("GET", "/jobs/1/logs"),
    ("POST", "/jobs/1/cancel"),
    ("GET", "/events"),
    ("DELETE", "/sessions/00000000-0000-4000-8000-000000000000"),
    ("GET", "/sessions"),
    ("POST", "/admin/drain"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path"), IDENTIFIED_ROUTES)
async def test_no_credentials_is_401(
    shared: Clients, sequence_json: str, method: str, path: str
) -> None:
    """Every route that acts for someone needs to know who."""
    body = {"sequence": sequence_json, "shots": 1} if method == "POST" else None
    response = await shared.anonymous.request(method, path, json=body)
    refused(response, 401, "auth", "authentication required", "Bearer")


def forged_admin_token() -> str:
    """A user's token whose claims were edited to say admin: the signature no longer fits."""
    prefix, _claims, signature = auth_header(USER)["Authorization"].split()[1].split(".")
    claims = base64.urlsafe_b64encode(json.dumps({"uid": ADMIN, "admin": True}).encode())
    return f"{prefix}.{claims.decode()}.{signature}"


def foreign_token() -> str:
    """A well-formed token signed with another site's secret."""
    from qhpc_lab.scheduler.auth import make_token

    return make_token("another-secret", USER)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("authorization", "words"),
    [
        pytest.param("Bearer not-a-token", ("malformed",), id="malformed"),
        pytest.param("Bearer qhpc.e30.deadbeef", ("bad signature",), id="bad-signature"),
        pytest.param(f"Bearer {forged_admin_token()}", ("bad signature",), id="forged-claims"),
        pytest.param(f"Bearer {foreign_token()}", ("bad signature",), id="other-secret"),
        pytest.param("Basic dXNlcjpwYXNz", ("Bearer",), id="basic-scheme"),
        pytest.param("Bearer", ("Bearer",), id="empty-token"),
        pytest.param(b"Bearer qhpc.e30.\xe9\xe9", ("bad signature",), id="non-ascii"),
    ],
)
async def test_bad_bearer_tokens_are_401(
    shared: Clients, authorization: str | bytes, words: tuple[str, ...]
) -> None:
    """A token that is not ours is refused as such, never a 500 (non-ASCII once was)."""
    response = await shared.anonymous.get("/jobs", headers={"Authorization": authorization})
    refused(response, 401, "auth", *words)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/sessions", {"user_id": USER, "slurm_job_id": "1"}),
        ("GET", "/sessions", None),
        ("DELETE", "/sessions", None),
        ("POST", "/accessible", {"is_accessible": False, "message": "mine now"}),
        ("POST", "/admin/calibrate", None),
        ("POST", "/admin/drain", None),
        ("POST", "/admin/resume", None),
    ],
)
async def test_admin_routes_refuse_a_user(
    shared: Clients, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """Sessions, accessibility and device operations belong to the site, not to users."""
    headers = {SESSION: str(uuid.uuid4())}
    response = await shared.user.request(method, path, json=body, headers=headers)
    refused(response, 403, "auth", "administrator")


@pytest.mark.anyio
async def test_users_see_and_cancel_only_their_own_jobs(
    shared: Clients, sequence_json: str
) -> None:
    """Another user's job does not exist for you; an administrator sees and cancels any."""
    mine = await submit(shared.user, sequence_json, LONG_SHOTS)
    theirs = await submit(shared.other, sequence_json)
    try:
        for method, path in (
            ("GET", f"/jobs/{mine['id']}"),
            ("GET", f"/jobs/{mine['id']}/logs"),
            ("POST", f"/jobs/{mine['id']}/cancel"),
        ):
            not_found(await shared.other.request(method, path), f"job {mine['id']}")
        assert (await shared.user.get(f"/jobs/{mine['id']}")).json()["status"] in ACTIVE

        for client, own, foreign, uid in (
            (shared.user, mine, theirs, USER),
            (shared.other, theirs, mine, OTHER),
        ):
            listed = (await client.get("/jobs")).json()
            assert {j["user_id"] for j in listed} == {uid}
            ids = {j["id"] for j in listed}
            assert own["id"] in ids and foreign["id"] not in ids

        everyone = {j["id"] for j in (await shared.admin.get("/jobs")).json()}
        assert {mine["id"], theirs["id"]} <= everyone
        assert (await shared.admin.get(f"/jobs/{mine['id']}")).status_code == 200
        canceled = (await shared.admin.post(f"/jobs/{mine['id']}/cancel")).json()
        assert canceled["status"] == "CANCELED"
        assert "administrator" in canceled["error"]
    finally:
        await cancel_all(shared.admin, [mine])


@pytest.mark.anyio
@pytest.mark.parametrize("job_id", ["999999", "0", "-1", str(2**31), str(2**63), str(10**30)])
async def test_unknown_job_ids_are_404(shared: Clients, job_id: str) -> None:
    """Ids past the database's integer type are unknown jobs too, not a server error."""
    for method, path in (
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}/logs"),
        ("POST", f"/jobs/{job_id}/cancel"),
    ):
        not_found(await shared.admin.request(method, path), f"job {job_id}")


# -- 4. bad input ----------------------------------------------------------------------------


def _grid(atoms: int, spacing: float) -> list[tuple[float, float]]:
    return [(spacing * (i % 5), spacing * (i // 5)) for i in range(atoms)]


BAD_BODIES = [
    pytest.param(lambda s: {"shots": 10}, "request", ("sequence", "required"), id="no-sequence"),
    pytest.param(lambda s: {"sequence": s}, "request", ("shots", "required"), id="no-shots"),
    pytest.param(
        lambda s: {"sequence": s, "shots": 10, "format": "cirq"},
        "format",
        ("cirq", "pulser", "qasm3"),
        id="unknown-format",
    ),
    pytest.param(
        lambda s: {"sequence": "OPENQASM 3.0; qubit[2] q; h q[0];", "shots": 10, "format": "qasm3"},
        "format",
        ("QHPC-Test cannot run 'qasm3' programs", "pulser programs only", 'target="emulator"'),
        id="gate-circuit-on-the-analog-qpu",
    ),
    pytest.param(
        lambda s: {"sequence": s, "shots": 0}, "shots", ("shots", "positive"), id="zero-shots"
    ),
    pytest.param(lambda s: {"sequence": s, "shots": -5}, "shots", ("-5",), id="negative-shots"),
    pytest.param(
        lambda s: {"sequence": s, "shots": 10001}, "max_runs", ("10001", "10000"), id="max-runs"
    ),
    pytest.param(
        lambda s: {"sequence": sequence_at(_grid(17, 6.0)), "shots": 10},
        "max_atom_num",
        ("17", "16"),
        id="too-many-atoms",
    ),
    pytest.param(
        lambda s: {"sequence": sequence_at([(0.0, 0.0), (4.0, 0.0)]), "shots": 10},
        "min_atom_distance",
        ("4.00", "5"),
        id="atoms-too-close",
    ),
    pytest.param(
        lambda s: {"sequence": sequence_at([(-40.0, 0.0), (40.0, 0.0)]), "shots": 10},
        "max_radial_distance",
        ("40.00", "38"),
        id="atom-too-far",
    ),
    pytest.param(
        lambda s: {"sequence": sequence_at([(0.0, 0.0), (6.0, 0.0)], 7000), "shots": 10},
        "max_sequence_duration",
        ("7000", "6000"),
        id="too-long",
    ),
    pytest.param(
        lambda s: {"sequence": "this is not a sequence", "shots": 10},
        "body",
        ("Pulser",),
        id="garbage-sequence",
    ),
    pytest.param(
        lambda s: {"sequence": s, "shots": 10, "job_class": "urgent"},
        "job_class",
        ("urgent", "development", "test", "production"),
        id="unknown-job-class",
    ),
    pytest.param(
        lambda s: {"sequence": s, "shots": 10, "priority": 1},
        "request",
        ("priority", "not permitted"),
        id="unknown-field",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("make_body", "rule", "words"), BAD_BODIES)
async def test_bad_submissions_are_422_naming_the_rule(
    shared: Clients,
    sequence_json: str,
    make_body: Callable[[str], dict[str, Any]],
    rule: str,
    words: tuple[str, ...],
) -> None:
    """Refused before queueing, with what is wrong and the device's limit where there is one."""
    newest = await newest_job_id(shared.admin)
    response = await shared.user.post("/jobs", json=make_body(sequence_json))
    refused(response, 422, rule, *words)
    assert await newest_job_id(shared.admin) == newest


@pytest.mark.anyio
async def test_the_scheduler_itself_refuses_a_format_its_device_does_not_run(
    shared: Clients,
) -> None:
    """The rule is the scheduler's, not the HTTP route's: a program reaching it any other way
    is refused alike."""
    from qhpc_lab.programs import Program
    from qhpc_lab.scheduler.refusal import SchedulerError

    gate = Program("qasm3", "OPENQASM 3.0; qubit[2] q; h q[0];", 10)
    newest = await newest_job_id(shared.admin)
    with pytest.raises(SchedulerError) as refusal:
        await shared.scheduler.submit(USER, False, None, gate)  # type: ignore[attr-defined]
    assert refusal.value.status == 422 and refusal.value.rule == "format"
    assert "cannot run 'qasm3' programs" in str(refusal.value)
    assert await newest_job_id(shared.admin) == newest


@pytest.mark.anyio
async def test_malformed_json_is_400(shared: Clients) -> None:
    response = await shared.user.post(
        "/jobs",
        content=b'{"sequence": "x", "shots": ',
        headers={"Content-Type": "application/json"},
    )
    refused(response, 400, "json", "malformed JSON")


async def in_pieces(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """A request body sent chunked (no Content-Length), the way a streaming client sends it."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.anyio
async def test_bodies_over_the_payload_limit_are_413(shared: Clients, sequence_json: str) -> None:
    """Announced by Content-Length or streamed without one, an oversized body is refused."""
    big = json.dumps({"sequence": sequence_json + " " * PAYLOAD_LIMIT, "shots": 10}).encode()
    response = await shared.user.post(
        "/jobs", content=big, headers={"Content-Type": "application/json"}
    )
    refused(response, 413, "max_payload_bytes", str(len(big)), str(PAYLOAD_LIMIT))

    streamed = await shared.user.post(
        "/jobs", content=in_pieces(big), headers={"Content-Type": "application/json"}
    )
    assert streamed.request.headers.get("transfer-encoding") == "chunked"
    refused(streamed, 413, "max_payload_bytes", str(PAYLOAD_LIMIT))

    # A streamed body within the limit still reaches the route whole.
    small = json.dumps({"sequence": sequence_json, "shots": 10}).encode()
    accepted = await shared.user.post(
        "/jobs", content=in_pieces(small, 512), headers={"Content-Type": "application/json"}
    )
    assert accepted.status_code == 200, accepted.text


# -- 2. sessions --------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("case", "words"),
    [
        pytest.param("another user's", ("another user",), id="foreign"),
        pytest.param("revoked", ("revoked", "session released"), id="revoked"),
        pytest.param("unknown", ("does not exist",), id="unknown"),
    ],
)
async def test_jobs_under_a_session_that_is_not_yours_and_open_are_403(
    shared: Clients, sequence_json: str, case: str, words: tuple[str, ...]
) -> None:
    """A session is the Slurm job's QPU share: nobody else's job may run on it."""
    if case == "unknown":
        session = str(uuid.uuid4())
    else:
        session = (await open_session(shared.admin, OTHER if case == "another user's" else USER))[
            "id"
        ]
        if case == "revoked":
            assert (await shared.admin.delete(f"/sessions/{session}")).status_code == 200
    response = await shared.user.post(
        "/jobs", json={"sequence": sequence_json, "shots": 10}, headers={SESSION: session}
    )
    refused(response, 403, "session", session, *words)


@pytest.mark.anyio
async def test_required_sessions_refuse_jobs_without_one(
    tmp_path: Path, sequence_json: str
) -> None:
    """On HPC a job must come through its Slurm job's session; its job carries the session."""
    async with in_process(scheduler_config(tmp_path, require_session=True)) as api:
        response = await api.user.post("/jobs", json={"sequence": sequence_json, "shots": 10})
        refused(response, 403, "session", "X-Warden-Session")

        session = await open_session(api.admin, USER, "7001")
        job = await submit(api.user, sequence_json, session=session["id"])
        assert job["session_id"] == session["id"]
        assert job["slurm_job_id"] == "7001"


# -- 1. Warden compatibility -------------------------------------------------------------------


@pytest.mark.anyio
async def test_post_sessions_takes_both_warden_bodies_and_is_idempotent(shared: Clients) -> None:
    """The Slurm prolog may retry, and may name the job slurm_job_id or scheduler_job_id."""

    async def post(body: dict[str, Any]) -> dict[str, Any]:
        response = await shared.admin.post("/sessions", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    first = await post({"user_id": int(USER), "slurm_job_id": 4242})
    assert type(first["id"]) is str and str(uuid.UUID(first["id"])) == first["id"]
    assert first["user_id"] == USER and first["slurm_job_id"] == "4242"
    assert first["qpu_slots"] == 1 and first["revoked_at"] is None
    assert RFC3339.fullmatch(first["created_at"])

    assert (await post({"user_id": USER, "slurm_job_id": "4242"}))["id"] == first["id"]
    assert (await post({"user_id": USER, "scheduler_job_id": 4242}))["id"] == first["id"]

    sized = await post({"user_id": USER, "scheduler_job_id": "4243", "qpu_slots": 4})
    assert sized["id"] != first["id"]
    assert sized["slurm_job_id"] == "4243" and sized["qpu_slots"] == 4
    assert (await post({"user_id": USER, "scheduler_job_id": "4243", "qpu_slots": 4}))[
        "id"
    ] == sized["id"]

    assert (await post({"user_id": OTHER, "slurm_job_id": "4242"}))["id"] != first["id"]

    listed = {s["id"] for s in (await shared.admin.get("/sessions")).json()}
    assert {first["id"], sized["id"]} <= listed

    zero = await shared.admin.post("/sessions", json={"user_id": USER, "qpu_slots": 0})
    refused(zero, 422, "request", "qpu_slots")


@pytest.mark.anyio
async def test_delete_session_returns_it_and_cancels_its_pending_jobs(
    shared: Clients, sequence_json: str
) -> None:
    """The Slurm epilog ends the share: queued work of the session is canceled with the reason."""
    session = await open_session(shared.admin, USER, "5001")
    assert (await shared.admin.post("/admin/drain")).json()["draining"] is True
    try:  # drained, so the session's jobs are certainly still PENDING when it ends
        queued = [await submit(shared.user, sequence_json, session=session["id"]) for _ in "ab"]
        assert all(j["session_id"] == session["id"] for j in queued)
        assert all(j["slurm_job_id"] == "5001" for j in queued)

        not_found(
            await shared.other.delete(f"/sessions/{session['id']}"), f"session {session['id']}"
        )
        response = await shared.admin.delete(f"/sessions/{session['id']}")
        assert response.status_code == 200, response.text
        ended = response.json()
        assert ended["id"] == session["id"] and ended["user_id"] == USER
        assert RFC3339.fullmatch(ended["revoked_at"])
        for job in queued:
            after = (await shared.user.get(f"/jobs/{job['id']}")).json()
            assert after["status"] == "CANCELED" and after["results"] is None
            assert "session released" in after["error"]
    finally:
        await shared.admin.post("/admin/resume")

    own = await open_session(shared.admin, USER)  # a user may release their own session
    released = await shared.user.delete(f"/sessions/{own['id']}")
    assert released.status_code == 200 and released.json()["id"] == own["id"]
    assert released.json()["revoked_at"] is not None
    by_header = await open_session(shared.admin, USER)  # Warden's form: the id in the header
    revoked = await shared.admin.delete("/sessions", headers={SESSION: by_header["id"]})
    assert revoked.status_code == 200 and revoked.json()["id"] == by_header["id"]
    assert revoked.json()["revoked_at"] is not None
    unknown = str(uuid.uuid4())
    not_found(await shared.admin.delete(f"/sessions/{unknown}"), f"session {unknown}")


@pytest.mark.anyio
async def test_qpu_specs_is_pulser_device_json_text(shared: Clients) -> None:
    from pulser.abstract_repr import deserialize_device

    response = await shared.user.get("/qpu/specs")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"specs", "formats"} and type(body["specs"]) is str
    assert body["formats"] == ["pulser"]  # QRMI reads specs only; formats is ours, beside it
    pulser_device = deserialize_device(body["specs"])
    assert pulser_device.name == "QHPC-Test"
    assert pulser_device.max_atom_num == 16 and pulser_device.max_runs == 10000


@pytest.mark.anyio
async def test_accessible_toggle_closes_submissions_naming_the_message(
    api: Clients, sequence_json: str
) -> None:
    """Own scheduler: closing the QPU is device-wide state."""
    opened = (await api.user.get("/accessible")).json()
    assert opened == {"is_accessible": True, "message": ""}

    refused(await api.user.post("/accessible", json={"is_accessible": False}), 403, "auth")
    message = "cryostat warm-up until 14:00"
    closed = await api.admin.post("/accessible", json={"is_accessible": False, "message": message})
    assert closed.json() == {"is_accessible": False, "message": message}
    assert (await api.anonymous.get("/accessible")).json() == closed.json()
    assert (await device(api.user))["state"] == "MAINTENANCE"

    response = await api.user.post("/jobs", json={"sequence": sequence_json, "shots": 10})
    refused(response, 503, "accessible", message)
    assert int(response.headers["Retry-After"]) > 0

    reopened = await api.admin.post("/accessible", json={"is_accessible": True})
    assert reopened.json() == {"is_accessible": True, "message": ""}  # no stale closing notice
    assert (await device(api.user))["state"] == "ONLINE"
    await submit(api.user, sequence_json)


@pytest.mark.anyio
async def test_job_documents_have_warden_types_through_to_results(
    shared: Clients, sequence_json: str
) -> None:
    """id int, user_id str, upper-case status, results JSON text or null, RFC 3339 created_at."""
    submitted = await submit(shared.user, sequence_json, 50)
    assert_warden_job(submitted)
    assert submitted["user_id"] == USER
    assert submitted["status"] in ACTIVE and submitted["results"] is None

    done = await wait_for_status(shared.user, submitted["id"], timeout=WAIT_S)
    assert_warden_job(done)
    results = json.loads(done["results"])
    assert list(results) == ["counter"]
    assert sum(results["counter"].values()) == 50
    assert all(re.fullmatch("[01]{2}", bits) for bits in results["counter"])
    assert all(type(n) is int for n in results["counter"].values())
    assert done["position"] is None and done["eta_s"] is None
    assert RFC3339.fullmatch(done["finished_at"])

    listed = (await shared.user.get("/jobs")).json()
    for job in listed:
        assert_warden_job(job)
    assert done["id"] in {j["id"] for j in listed}

    logs = (await shared.user.get(f"/jobs/{done['id']}/logs")).json()
    assert set(logs) == {"logs"} and type(logs["logs"]) is str
    assert "DONE" in logs["logs"]


# -- 5. extensions -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_device_reports_state_calibration_and_queue_depth(shared: Clients) -> None:
    info = await device(shared.anonymous)
    assert info["name"] == "QHPC-Test" and info["profile"] == "test"
    assert info["formats"] == ["pulser"]
    assert info["state"] == "ONLINE"
    assert isinstance(info["calibrated_at"], float)
    assert isinstance(info["calibration_age_s"], float) and info["calibration_age_s"] >= 0
    assert 0 < info["next_calibration_in_s"] <= 3600
    assert set(info["queue_depth"]) == {"development", "test", "production"}
    assert all(type(n) is int for n in info["queue_depth"].values())


@pytest.mark.anyio
async def test_active_jobs_have_position_and_eta_and_development_goes_first(
    shared: Clients, sequence_json: str
) -> None:
    """A development job submitted last is ordered before the production jobs still waiting."""
    await idle(shared)
    jobs = [await submit(shared.user, sequence_json, LONG_SHOTS) for _ in range(3)]
    jobs.append(await submit(shared.user, sequence_json, LONG_SHOTS, job_class="development"))
    try:
        # One GET /jobs shows one instant; separate GETs would straddle chunk boundaries.
        listed = {j["id"]: j for j in (await shared.user.get("/jobs")).json()}
        views = [listed[j["id"]] for j in jobs]
        for view in views:
            assert view["status"] in ACTIVE
            assert type(view["position"]) is int
            assert type(view["eta_s"]) in (int, float) and view["eta_s"] >= 0
        # A started job (RUNNING) is at 0, the waiting ones from 1 with no number skipped.
        started = sum(v["status"] == "RUNNING" for v in views)
        assert sorted(v["position"] for v in views) == [0] * started + [1, 2, 3, 4][: 4 - started]

        *production, development = views
        assert development["job_class"] == "development"
        waiting = [v for v in production if v["position"] != 0]
        assert all(development["position"] < v["position"] for v in waiting)
        assert all(development["eta_s"] < v["eta_s"] for v in waiting)

        single = (await shared.user.get(f"/jobs/{jobs[-1]['id']}")).json()
        assert single["position"] is not None and single["eta_s"] is not None

        depth = (await device(shared.user))["queue_depth"]
        assert depth == {"development": 1, "test": 0, "production": 3}
    finally:
        await cancel_all(shared.admin, jobs)


@pytest.mark.anyio
async def test_cancelling_a_running_job_charges_its_partial_chunk(
    shared: Clients, sequence_json: str
) -> None:
    """CANCELED at once, without results; the chunk in flight stops, charged the shots its
    time on the device covered (issue 27: a cancelled chunk is not free), at most a chunk."""
    job = await submit(shared.user, sequence_json, LONG_SHOTS)
    try:

        async def mid_run() -> dict[str, Any] | None:
            view = (await shared.user.get(f"/jobs/{job['id']}")).json()
            return view if view["status"] == "RUNNING" and view["shots_done"] > 0 else None

        await apoll_until(mid_run, "the job to be running with chunks done", WAIT_S)
        response = await shared.user.post(f"/jobs/{job['id']}/cancel")
        assert response.status_code == 200, response.text
        canceled = response.json()
        assert canceled["status"] == "CANCELED" and canceled["results"] is None
        assert canceled["error"] == "canceled by user"
        assert canceled["position"] is None and canceled["eta_s"] is None

        await idle(shared)  # the chunk that was running has ended
        final = (await shared.user.get(f"/jobs/{job['id']}")).json()
        assert final["status"] == "CANCELED" and final["results"] is None
        chunk = shared.scheduler.driver.profile.chunk_shots  # type: ignore[attr-defined]
        assert 0 < canceled["shots_done"] <= final["shots_done"] < LONG_SHOTS
        assert final["shots_done"] <= canceled["shots_done"] + chunk
        assert RFC3339.fullmatch(final["finished_at"])
    finally:
        await cancel_all(shared.admin, [job])


@pytest.mark.anyio
async def test_drain_holds_new_jobs_until_resume(shared: Clients, sequence_json: str) -> None:
    """A started job keeps running through a drain: each of its chunk boundaries is a
    dispatcher decision taken with the new job queued, and the new job, which would otherwise
    go first (development), is held. No timing: the started job's progress is the proof."""
    await idle(shared)
    started = await submit(shared.other, sequence_json, 9000)  # 4.5 s: outlasts the checks
    held = None
    try:
        await wait_until_started(shared.other, started["id"], WAIT_S)
        drained = await shared.admin.post("/admin/drain")
        assert drained.status_code == 200 and drained.json()["draining"] is True
        try:
            # accepted: draining is not closing
            held = await submit(shared.user, sequence_json, job_class="development")
            chunk = shared.scheduler.driver.profile.chunk_shots  # type: ignore[attr-defined]
            shots_then = (await shared.other.get(f"/jobs/{started['id']}")).json()["shots_done"]

            async def two_boundaries_later() -> dict[str, Any] | None:
                job = (await shared.other.get(f"/jobs/{started['id']}")).json()
                return job if job["shots_done"] >= shots_then + 2 * chunk else None

            running = await apoll_until(two_boundaries_later, "two more chunks", WAIT_S)
            assert running["held_by"] is None
            view = (await shared.user.get(f"/jobs/{held['id']}")).json()
            assert view["status"] == "PENDING" and view["shots_done"] == 0
            assert view["held_by"] == "draining" and view["eta_s"] is None
            assert type(view["position"]) is int
            queue = shared.scheduler.queue_snapshot().for_user(USER)  # type: ignore[attr-defined]
            assert queue["jobs"][str(held["id"])] == {
                "position": view["position"],
                "eta_s": None,
                "held_by": "draining",
            }
        finally:
            resumed = await shared.admin.post("/admin/resume")
        assert resumed.json()["draining"] is False
        done = await wait_for_status(shared.user, held["id"], timeout=WAIT_S)
        assert done["status"] == "DONE" and done["held_by"] is None
    finally:
        await cancel_all(shared.admin, [started, *([held] if held else [])])


@pytest.mark.anyio
async def test_metrics_counters_move_after_a_job(shared: Clients, sequence_json: str) -> None:
    await idle(shared)
    before = await scrape(shared.anonymous)
    refused(
        await shared.user.post("/jobs", json={"sequence": sequence_json, "shots": 0}),
        422,
        "shots",
    )
    job = await submit(shared.user, sequence_json, 20)
    await wait_for_status(shared.user, job["id"], timeout=WAIT_S)
    after = await scrape(shared.anonymous)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta('qhpc_submissions_total{job_class="production"}') == 1
    assert delta('qhpc_jobs_finished_total{status="DONE"}') == 1
    assert delta("qhpc_shots_total") == 20
    assert delta("qhpc_rejected_submissions_total") == 1
    assert delta('qhpc_job_wait_seconds_count{job_class="production"}') == 1
    assert after['qhpc_device_state{state="ONLINE"}'] == 1
    exposition = (await shared.anonymous.get("/metrics")).text
    for counter in ("qhpc_submissions_total", "qhpc_jobs_finished_total", "qhpc_shots_total"):
        assert f"# TYPE {counter} counter" in exposition


@pytest.mark.anyio
async def test_admin_calibrate_goes_through_calibrating_back_to_online(shared: Clients) -> None:
    calibrated_at = (await device(shared.user))["calibrated_at"]
    response = await shared.admin.post("/admin/calibrate")
    assert response.status_code == 200 and "state" in response.json()

    async def in_state(state: str) -> dict[str, Any] | None:
        info = await device(shared.user)
        return info if info["state"] == state else None

    await apoll_until(lambda: in_state("CALIBRATING"), "the device to start calibrating", WAIT_S)
    online = await apoll_until(lambda: in_state("ONLINE"), "the device to come back online", WAIT_S)
    assert online["calibrated_at"] > calibrated_at
    assert online["calibration_age_s"] >= 0


@pytest.mark.anyio
async def test_openapi_document_lists_the_routes(shared: Clients) -> None:
    response = await shared.anonymous.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    routes = {
        "/accessible": {"get", "post"},
        "/sessions": {"get", "post", "delete"},
        "/sessions/{session_id}": {"delete"},
        "/jobs": {"get", "post"},
        "/jobs/{job_id}": {"get"},
        "/jobs/{job_id}/logs": {"get"},
        "/jobs/{job_id}/cancel": {"post"},
        "/qpu/specs": {"get"},
        "/device": {"get"},
        "/events": {"get"},
        "/metrics": {"get"},
        "/admin/calibrate": {"post"},
        "/admin/drain": {"post"},
        "/admin/resume": {"post"},
    }
    for path, methods in routes.items():
        assert methods <= set(document["paths"].get(path, {})), path
    job_fields = set(document["components"]["schemas"]["JobOut"]["properties"])
    assert {"id", "user_id", "created_at", "status", "results", "position", "eta_s"} <= job_fields


# -- 6. the event stream, over a real socket ---------------------------------------------------


def read_events(
    lines: Iterator[str], until: Callable[[str, dict[str, Any]], bool], timeout: float = WAIT_S
) -> list[tuple[str, dict[str, Any]]]:
    """Server-sent events from ``lines`` up to and including the first one ``until`` accepts."""
    events: list[tuple[str, dict[str, Any]]] = []
    kind = "message"
    deadline = time.monotonic() + timeout
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((kind, json.loads(line.removeprefix("data: "))))
            if until(*events[-1]):
                return events
        if time.monotonic() > deadline:
            raise AssertionError(f"no final event within {timeout} s: {events}")
    raise AssertionError(f"the stream ended early: {events}")


def test_event_stream_carries_own_jobs_and_device_changes(
    server: Daemon, sequence_json: str
) -> None:
    """ASGITransport buffers whole responses, so the stream is read from the real daemon."""
    # The read timeout guards the test: a silent stream (heartbeats come every 15 s) fails it.
    timeout = httpx.Timeout(30.0, read=60.0)

    def client(uid: str, admin: bool = False) -> httpx.Client:
        return httpx.Client(base_url=server.url, headers=auth_header(uid, admin), timeout=timeout)

    body = {"sequence": sequence_json, "shots": 20}
    with client(USER) as user, client(OTHER) as other, client(ADMIN, admin=True) as admin:
        with user.stream("GET", "/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            # On connect: the device and the queue as they are now, before any change.
            initial = read_events(lines, lambda kind, _data: kind == "queue")
            assert [kind for kind, _ in initial] == ["device", "queue"]
            assert initial[0][1]["draining"] is False
            assert initial[1][1]["jobs"] == {}

            assert admin.post("/admin/drain").status_code == 200
            assert admin.post("/admin/resume").status_code == 200
            theirs = other.post("/jobs", json=body).json()["id"]  # runs first, while we listen
            mine = user.post("/jobs", json=body).json()["id"]

            def mine_done(kind: str, data: dict[str, Any]) -> bool:
                return kind == "job" and data["id"] == mine and data["status"] == "DONE"

            events = read_events(lines, mine_done)
        # theirs ran first (same class, fair share): it ends, whether before or after mine
        poll_until(
            lambda: other.get(f"/jobs/{theirs}").json()["status"] == "DONE",
            f"their job {theirs} to end",
            WAIT_S,
        )

    jobs = [data for kind, data in events if kind == "job"]
    assert {j["id"] for j in jobs} == {mine}, "another user's job reached this stream"
    statuses = [j["status"] for j in jobs]
    assert "RUNNING" in statuses and statuses[-1] == "DONE"
    assert statuses.index("RUNNING") < statuses.index("DONE")
    assert json.loads(jobs[-1]["results"])["counter"]

    changes = [data for kind, data in events if kind == "device"]
    assert [c["draining"] for c in changes][:2] == [True, False]
    assert all(c["state"] == "ONLINE" for c in changes)
