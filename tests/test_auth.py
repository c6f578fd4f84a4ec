"""Identity that holds: replays refused across munged and scheduler restarts, munged down is
the server's fault (503), bearer tokens expire and bad ones are refused cleanly."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from qhpc_lab import munge
from qhpc_lab.scheduler.auth import (
    DEFAULT_TOKEN_TTL_S,
    MUNGE_RETRY_AFTER_S,
    PRUNE_INTERVAL_S,
    Authenticator,
    AuthError,
    _key,
    make_token,
    read_token,
)
from qhpc_lab.scheduler.store import Store
from qhpc_lab.vocabulary import parse_duration
from tests.support.daemons import daemon
from tests.support.identities import SECRET
from tests.support.in_process import in_process, scheduler_config
from tests.support.munge import PrivateMunged

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
NOW = 1_800_000_000.0


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("fresh_postgres_url")
    return f"sqlite:///{tmp_path / 'scheduler.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store(db_url)
    yield opened
    opened.close()


def munge_authenticator(socket: str, store: Store | None) -> Authenticator:
    return Authenticator(("munge",), frozenset({"0"}), None, socket, replay_guard=store)


# -- the credential memory -------------------------------------------------------------------


def test_store_remembers_a_credential_until_it_is_pruned(store: Store) -> None:
    assert store.first_use("a" * 64, expires_at=NOW + 300)
    assert not store.first_use("a" * 64, expires_at=NOW + 300)
    assert store.first_use("b" * 64, expires_at=NOW - 1)
    assert store.forget_expired(NOW) == 1
    assert store.first_use("b" * 64, expires_at=NOW + 300)  # forgotten: a new entry
    assert not store.first_use("a" * 64, expires_at=NOW + 300)


@pytest.mark.munge
def test_replay_is_refused_after_munged_restarts(
    private_munged: PrivateMunged, store: Store
) -> None:
    auth = munge_authenticator(private_munged.socket, store)
    credential = munge.encode(socket=private_munged.socket)
    assert auth.identify(credential, None).user_id == str(os.getuid())
    private_munged.restart()  # munged forgets it: only our memory refuses it now
    assert munge.decode(credential, private_munged.socket).uid == os.getuid()
    respelled = credential[:30] + "\n" + credential[30:]  # munged reads both the same
    for replay in (credential, respelled):
        with pytest.raises(AuthError, match="replayed") as refused:
            auth.identify(replay, None)
        assert refused.value.status == 401


@pytest.mark.munge
def test_replay_is_refused_after_the_scheduler_restarts(
    private_munged: PrivateMunged, db_url: str
) -> None:
    credential = munge.encode(socket=private_munged.socket)
    first = Store(db_url)
    munge_authenticator(private_munged.socket, first).identify(credential, None)
    first.close()
    private_munged.restart()
    again = Store(db_url)
    try:
        with pytest.raises(AuthError, match="replayed"):
            munge_authenticator(private_munged.socket, again).identify(credential, None)
    finally:
        again.close()


@pytest.mark.munge
def test_without_a_store_replays_are_still_refused_across_munged_restarts(
    private_munged: PrivateMunged,
) -> None:
    auth = munge_authenticator(private_munged.socket, None)
    credential = munge.encode(socket=private_munged.socket)
    auth.identify(credential, None)
    private_munged.restart()
    with pytest.raises(AuthError, match="replayed"):
        auth.identify(credential, None)


@pytest.mark.munge
def test_remembered_credentials_expire_with_munge_ttl(
    private_munged: PrivateMunged, tmp_path: Path
) -> None:
    """The memory keeps a credential as long as munged would accept it, then prunes it."""
    store = Store(f"sqlite:///{tmp_path / 'scheduler.db'}")
    clock = [time.time()]
    auth = Authenticator(
        ("munge",), frozenset(), None, private_munged.socket, store, clock=lambda: clock[0]
    )
    try:
        credential = munge.encode(socket=private_munged.socket)
        decoded = munge.decode(munge.encode(socket=private_munged.socket), private_munged.socket)
        assert decoded.ttl_s > 0 and abs(decoded.encoded_at - time.time()) < 60
        auth.identify(credential, None)
        digest = munge.fingerprint(credential)
        clock[0] += PRUNE_INTERVAL_S + decoded.ttl_s + 2  # the next identify prunes
        auth.identify(munge.encode(socket=private_munged.socket), None)
        assert store.first_use(digest, clock[0] + 60)  # it was forgotten
    finally:
        store.close()


@pytest.mark.munge
def test_munged_down_is_503_with_retry_after(private_munged: PrivateMunged) -> None:
    auth = munge_authenticator(private_munged.socket, None)
    credential = munge.encode(socket=private_munged.socket)
    private_munged.stop()
    with pytest.raises(AuthError, match="MUNGE is unavailable on the scheduler host") as down:
        auth.identify(credential, None)
    assert down.value.status == 503 and down.value.retry_after == MUNGE_RETRY_AFTER_S
    private_munged.start()
    assert auth.identify(credential, None).user_id == str(os.getuid())  # not used up


@pytest.mark.munge
def test_munged_dead_with_its_socket_left_is_503(private_munged: PrivateMunged) -> None:
    """Connection refused (libmunge retries for about 2 s first) is munged down too."""
    auth = munge_authenticator(private_munged.socket, None)
    credential = munge.encode(socket=private_munged.socket)
    private_munged.kill()
    assert Path(private_munged.socket).exists()
    with pytest.raises(AuthError, match=r"unavailable.*refused") as down:
        auth.identify(credential, None)
    assert down.value.status == 503 and down.value.retry_after == MUNGE_RETRY_AFTER_S


@pytest.mark.munge
@pytest.mark.anyio
async def test_api_answers_503_retry_after_when_munged_is_down(
    private_munged: PrivateMunged, tmp_path: Path
) -> None:
    """Needs app.py to send ``AuthError.retry_after`` as a Retry-After header."""
    config = scheduler_config(tmp_path, auth=("munge",), munge_socket=private_munged.socket)
    credential = munge.encode(socket=private_munged.socket)
    private_munged.stop()
    async with in_process(config) as clients:
        response = await clients.anonymous.get("/jobs", headers={"X-Munge-Cred": credential})
    assert response.status_code == 503, response.text
    assert response.json()["rule"] == "auth"
    assert float(response.headers["Retry-After"]) == MUNGE_RETRY_AFTER_S


@pytest.mark.munge
@pytest.mark.anyio
async def test_api_refuses_a_replay_after_the_scheduler_restarts(
    private_munged: PrivateMunged, tmp_path: Path
) -> None:
    """Needs app.py to pass the store to the Authenticator (``replay_guard=store``)."""
    config = scheduler_config(tmp_path, auth=("munge",), munge_socket=private_munged.socket)
    headers = {"X-Munge-Cred": munge.encode(socket=private_munged.socket)}
    async with in_process(config) as clients:
        assert (await clients.anonymous.get("/jobs", headers=headers)).status_code == 200
    private_munged.restart()
    async with in_process(config) as clients:
        response = await clients.anonymous.get("/jobs", headers=headers)
    assert response.status_code == 401 and "replayed" in response.json()["detail"]


# -- credentials bound to their request (admin rule) -------------------------------------------


def _bound(socket: str, method: str, target: str, body: bytes = b"") -> dict[str, str]:
    return {"X-Munge-Cred": munge.encode_for_request(method, target, body, socket=socket)}


@pytest.mark.munge
@pytest.mark.anyio
async def test_a_captured_admin_credential_opens_no_other_session(
    private_munged: PrivateMunged, tmp_path: Path
) -> None:
    """The Grid Engine attack's second half: a listener that got root's credential for one
    session (1 slot) sends it on asking for 1024 slots. Bound to its request, it is refused;
    a root credential from elsewhere than ``admin_unbound_hosts`` that is not bound gives no
    admin rights; a bound one does, once."""
    config = scheduler_config(
        tmp_path,
        auth=("munge",),
        munge_socket=private_munged.socket,
        admin_unbound_hosts=(),  # the in-process client's address counts as "elsewhere"
    )
    asked = json.dumps({"user_id": "1001", "slurm_job_id": "7", "qpu_slots": 1}).encode()
    taken = json.dumps({"user_id": "1001", "slurm_job_id": "7", "qpu_slots": 1024}).encode()
    json_type = {"Content-Type": "application/json"}
    async with in_process(config) as clients:
        web = clients.anonymous
        captured = _bound(private_munged.socket, "POST", "/sessions", asked)
        stolen = await web.post("/sessions", content=taken, headers={**captured, **json_type})
        assert stolen.status_code == 401, stolen.text
        assert "made for another request" in stolen.json()["detail"]
        other_route = await web.post("/admin/drain", headers=captured)
        assert other_route.status_code == 401, other_route.text
        unbound = {"X-Munge-Cred": munge.encode(socket=private_munged.socket)}
        refused = await web.post("/sessions", content=asked, headers={**unbound, **json_type})
        assert refused.status_code == 403, refused.text
        assert "admin_unbound_hosts" in refused.json()["detail"]
        fresh = _bound(private_munged.socket, "POST", "/sessions", asked)
        opened = await web.post("/sessions", content=asked, headers={**fresh, **json_type})
        assert opened.status_code in (200, 201), opened.text
        again = await web.post("/sessions", content=asked, headers={**fresh, **json_type})
        assert again.status_code == 401 and "replayed" in again.json()["detail"]
        listed = await web.get(
            "/sessions", headers=_bound(private_munged.socket, "GET", "/sessions")
        )
        assert [s["qpu_slots"] for s in listed.json()] == [1]
        query = "/jobs?limit=5"
        assert (
            await web.get(query, headers=_bound(private_munged.socket, "GET", query))
        ).is_success
        wrong = await web.get("/jobs?limit=6", headers=_bound(private_munged.socket, "GET", query))
        assert wrong.status_code == 401


@pytest.mark.munge
@pytest.mark.anyio
async def test_an_unbound_admin_credential_counts_from_admin_unbound_hosts(
    private_munged: PrivateMunged, tmp_path: Path
) -> None:
    """QRMI's clients bind nothing: on the scheduler's own host (loopback, the default), root's
    unbound credential is an admin's, as Warden has it; a user's is a user's anywhere."""
    config = scheduler_config(tmp_path, auth=("munge",), munge_socket=private_munged.socket)
    async with in_process(config) as clients:
        unbound = {"X-Munge-Cred": munge.encode(socket=private_munged.socket)}
        assert (await clients.anonymous.get("/sessions", headers=unbound)).status_code == 200


@pytest.mark.munge
def test_behind_a_front_the_forwarded_address_counts(munged: None, tmp_path: Path) -> None:
    """A real daemon (uvicorn trusts X-Forwarded-For from 127.0.0.1, as HAProxy's
    ``option forwardfor`` sends it): root's unbound credential forwarded for a compute node is
    a plain user's; for loopback, or bound, an admin's."""
    with daemon(tmp_path, "--auth", "munge") as handle:

        def sessions(forwarded: str, credential: str) -> int:
            headers = {"X-Munge-Cred": credential, "X-Forwarded-For": forwarded}
            return httpx.get(f"{handle.url}/sessions", headers=headers, timeout=10).status_code

        assert sessions("10.20.30.40", munge.encode()) == 403
        assert sessions("127.0.0.1", munge.encode()) == 200
        assert sessions("10.20.30.40", munge.encode_for_request("GET", "/sessions", b"")) == 200


def test_admin_unbound_hosts_are_addresses_or_networks(tmp_path: Path) -> None:
    config = scheduler_config(tmp_path, admin_unbound_hosts="10.1.0.0/16, ::1")
    assert config.admin_unbound_hosts == ("10.1.0.0/16", "::1")
    auth = Authenticator(("token",), frozenset({"0"}), SECRET, admin_unbound_hosts=("10.1.0.0/16",))
    assert auth._unbound_allowed("10.1.2.3") and not auth._unbound_allowed("10.2.0.1")
    assert not auth._unbound_allowed(None) and not auth._unbound_allowed("testclient")
    with pytest.raises(ValueError):
        scheduler_config(tmp_path, admin_unbound_hosts=("compute-*",))


# -- bearer tokens ---------------------------------------------------------------------------


def test_token_carries_uid_admin_and_a_day_of_validity() -> None:
    token = make_token(SECRET, 1000, admin=True, now=NOW)
    assert read_token(SECRET, token, now=NOW + 1).user_id == "1000"
    assert read_token(SECRET, token, now=NOW + 1).admin
    assert not read_token(SECRET, make_token(SECRET, "1001"), now=time.time()).admin
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {"sub": "1000", "admin": True, "iat": NOW, "exp": NOW + DEFAULT_TOKEN_TTL_S}


def test_token_is_refused_once_expired_naming_when() -> None:
    clock = [NOW]
    auth = Authenticator(("token",), frozenset(), SECRET, clock=lambda: clock[0])
    header = f"Bearer {make_token(SECRET, 1000, ttl_s=1, now=NOW)}"
    assert auth.identify(None, header).user_id == "1000"
    clock[0] += 1
    with pytest.raises(AuthError, match="expired at 2027-01-15 08:00:01 UTC") as expired:
        auth.identify(None, header)
    assert expired.value.status == 401


def _signed(claims: dict[str, object]) -> str:
    """A token with these claims, signed as the scheduler signs (to test the claim checks)."""
    return jwt.encode(claims, _key(SECRET), algorithm="HS256")


def _old_format_token() -> str:
    claims = base64.urlsafe_b64encode(json.dumps({"uid": "0", "admin": True}).encode())
    return f"qhpc.{claims.decode()}.{'0' * 64}"


@pytest.mark.parametrize(
    ("token", "words"),
    [
        pytest.param("not-a-token", "malformed", id="garbage"),
        pytest.param("a.b.c", "malformed", id="three-parts"),
        pytest.param("é.é.é", "malformed", id="non-ascii"),
        pytest.param(_old_format_token(), "qhpc.* tokens are no longer accepted", id="old"),
        pytest.param(make_token("other-secret", 1000), "bad signature", id="other-secret"),
        pytest.param(
            jwt.encode({"sub": "0", "exp": NOW * 2}, None, algorithm="none"),
            "malformed",
            id="alg-none",
        ),
        pytest.param(_signed({"sub": "0", "iat": NOW}), "malformed", id="no-exp"),
        pytest.param(_signed({"sub": 0, "iat": NOW, "exp": NOW * 2}), "malformed", id="int-sub"),
        pytest.param(
            _signed({"sub": "0", "iat": NOW, "exp": "never"}), "malformed", id="exp-not-a-time"
        ),
        pytest.param(
            _signed({"sub": "x" * 65, "iat": NOW, "exp": NOW * 2}), "1 to 64", id="long-uid"
        ),
    ],
)
def test_bad_tokens_are_401_with_a_reason(token: str, words: str) -> None:
    with pytest.raises(AuthError, match=words.replace("*", r"\*")) as refused:
        read_token(SECRET, token, now=NOW)
    assert refused.value.status == 401


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "12x", "h", "1h30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="positive number"):
        parse_duration(text)


def _qhpc_token(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QHPC_TOKEN_SECRET": SECRET, "QHPC_STATE_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "qhpc_lab.cli", "scheduler", "token", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.anyio
async def test_cli_token_with_ttl_is_accepted(tmp_path: Path) -> None:
    made = _qhpc_token("--uid", "1234", "--ttl", "12h", tmp_path=tmp_path)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 12 * 3600
    async with in_process(scheduler_config(tmp_path)) as clients:
        response = await clients.anonymous.get(
            "/jobs", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.text
    refused = _qhpc_token("--uid", "1234", "--ttl", "soon", tmp_path=tmp_path)
    assert refused.returncode != 0 and "--ttl" in refused.stderr


@pytest.mark.munge
def test_identify_sends_no_token_to_munged(private_munged: PrivateMunged) -> None:
    """With both modes on, a bearer token alone never waits on munged (even a stopped one)."""
    auth = Authenticator(("munge", "token"), frozenset(), SECRET, private_munged.socket)
    private_munged.stop()
    header = f"Bearer {make_token(SECRET, 1000)}"
    assert auth.identify(None, header).user_id == "1000"


@pytest.mark.munge
@pytest.mark.anyio
async def test_identify_async_checks_credentials_in_a_bounded_pool(
    private_munged: PrivateMunged,
) -> None:
    auth = Authenticator(("munge", "token"), frozenset(), SECRET, private_munged.socket)
    credential = munge.encode(socket=private_munged.socket)
    assert (await auth.identify_async(credential, None)).user_id == str(os.getuid())
    header = f"Bearer {make_token(SECRET, 1000)}"
    assert (await auth.identify_async(None, header)).user_id == "1000"
    with pytest.raises(AuthError, match="replayed"):
        await auth.identify_async(credential, None)
