"""Who is calling: a MUNGE credential (HPC) or a bearer token (laptops, tests).

MUNGE identity is the uid inside a credential that the site's munged vouches for. Each
credential is good for one request (QRMI makes a fresh one per request, so this costs clients
nothing): munged refuses replays from its in-memory cache, and the scheduler also remembers
every credential it accepted until it expires (a :class:`ReplayGuard`, the store in the
daemon), so a replay is refused after munged or the scheduler restarts too.

A credential may carry :func:`qhpc_lab.munge.request_binding` as its payload: our clients
bind every credential to the request it goes with, and a bound one is refused with any other
request. An admin uid's credential gives admin rights only when it is bound, or
comes from one of ``admin_unbound_hosts`` (loopback by default): a credential that root sent
to the wrong place cannot be turned into another admin request elsewhere. Otherwise an
unbound one identifies the uid as a plain user (QRMI's clients send unbound credentials).

Tokens are HS256 JWTs (``sub`` = uid, ``admin``, ``iat``, ``exp``) made by
``qhpc scheduler token`` and signed with the scheduler's token secret.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import anyio
import jwt

from qhpc_lab import munge

AUTH_MODES = ("munge", "token")
MAX_UID_LENGTH = 64
"""What the store keeps of a user id (PostgreSQL refuses longer)."""
DEFAULT_TOKEN_TTL_S = 24 * 3600
"""A day: longer than a working session or a typical Slurm job's time limit, short enough
that a token left in a notebook or a job script stops working by itself."""
MUNGE_RETRY_AFTER_S = 5.0
"""What a client is told to wait when munged is down (systemd restarts it within seconds)."""
DECODE_THREADS = 8
"""Threads that wait on munged at once: a pool of their own, so a burst of decodes neither
takes the event loop's default pool (40 threads) from other blocking work nor piles up on
munged, which runs 2 worker threads by default."""
PRUNE_INTERVAL_S = 1.0
"""How often expired credentials are forgotten: one DELETE a second, not one per request,
and a small one (at 650 credentials/s it drops ~650 rows, a few ms of the store's time,
where once a minute would stall it for tenths of a second)."""
_ALGORITHM = "HS256"
_CLAIMS = ["sub", "iat", "exp"]
_MUNGED_DOWN = (munge.SOCKET_ERROR, munge.TIMEOUT)


@dataclass(frozen=True)
class Identity:
    user_id: str
    admin: bool


class AuthError(Exception):
    """A refused request: ``status`` is 401/403 (the caller's fault) or 503 (ours).

    ``retry_after`` (seconds) is set when trying again later will work: the API sends it as
    a ``Retry-After`` header.
    """

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ReplayGuard(Protocol):
    """A memory of accepted credentials, kept until they expire (the store implements it)."""

    def first_use(self, digest: str, expires_at: float) -> bool:
        """Remember ``digest``; False if it is already remembered (a replay)."""
        ...

    def forget_expired(self, now: float) -> int:
        """Drop what expired before ``now``; returns how many."""
        ...


class MemoryReplayGuard:
    """A :class:`ReplayGuard` in this process's memory: survives munged restarts, not ours."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, digest: str, expires_at: float) -> bool:
        with self._lock:
            if digest in self._seen:
                return False
            self._seen[digest] = expires_at
            return True

    def forget_expired(self, now: float) -> int:
        with self._lock:
            expired = [d for d, at in self._seen.items() if at < now]
            for digest in expired:
                del self._seen[digest]
        return len(expired)


def _key(secret: str) -> bytes:
    """The HS256 key: 32 bytes whatever the configured secret's length (ours are 64 hex)."""
    return hashlib.sha256(secret.encode()).digest()


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def make_token(
    secret: str,
    uid: int | str,
    admin: bool = False,
    ttl_s: float = DEFAULT_TOKEN_TTL_S,
    now: float | None = None,
) -> str:
    """A bearer token for ``uid``, valid ``ttl_s`` seconds from ``now`` (default: the clock)."""
    issued = int(time.time() if now is None else now)
    claims = {"sub": str(uid), "admin": bool(admin), "iat": issued, "exp": issued + int(ttl_s)}
    return jwt.encode(claims, _key(secret), algorithm=_ALGORITHM)


def read_token(secret: str, token: str, now: float | None = None) -> Identity:
    """The identity a token carries, if our secret signed it and it has not expired."""
    if token.startswith("qhpc."):  # the format before tokens expired
        raise AuthError(
            401,
            "invalid bearer token (bad signature): qhpc.* tokens are no longer accepted; "
            "make a new one with qhpc scheduler token",
        )
    try:
        data = jwt.decode(
            token,
            _key(secret),
            algorithms=[_ALGORITHM],
            # expiry is checked below, against the injectable clock and with a readable message
            options={"require": _CLAIMS, "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise AuthError(
            401,
            "invalid bearer token (bad signature): it was made with another secret; "
            "qhpc scheduler token must run with this scheduler's secret (its "
            "QHPC_TOKEN_SECRET, or the token.secret in its QHPC_STATE_DIR)",
        ) from None
    except jwt.InvalidTokenError as err:
        raise AuthError(401, f"malformed bearer token ({err})") from None
    expires_at = data["exp"]
    if not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
        raise AuthError(401, "malformed bearer token (exp is not a time)")
    if (time.time() if now is None else now) >= expires_at:
        raise AuthError(
            401,
            f"bearer token expired at {_utc(expires_at)}: make a new one with qhpc scheduler token",
        )
    uid = data["sub"]
    if not uid or len(uid) > MAX_UID_LENGTH:
        raise AuthError(401, f"token uid must be 1 to {MAX_UID_LENGTH} characters")
    return Identity(user_id=uid, admin=data.get("admin") is True)


def load_or_create_secret(path: Path) -> str:
    """The token secret, created with mode 0600 on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_text().strip()


class Authenticator:
    def __init__(
        self,
        modes: tuple[str, ...],
        admin_uids: frozenset[str],
        token_secret: str | None,
        munge_socket: str | None = None,
        replay_guard: ReplayGuard | None = None,
        clock: Callable[[], float] = time.time,
        admin_unbound_hosts: tuple[str, ...] = ("127.0.0.1", "::1"),
    ) -> None:
        """``replay_guard`` remembers accepted MUNGE credentials: pass the store, so that the
        memory outlives this process; without one it lives in this process only.
        ``admin_unbound_hosts``: addresses or networks from which an admin uid's MUNGE
        credential gives admin rights unbound; from elsewhere only a bound one does."""
        unknown = set(modes) - set(AUTH_MODES)
        if unknown or not modes:
            raise ValueError(f"auth modes must be among {AUTH_MODES}, got {modes}")
        if "token" in modes and not token_secret:
            raise ValueError("token auth needs a token secret")
        self.modes = modes
        self.admin_uids = admin_uids
        self.token_secret = token_secret
        self.munge_socket = munge_socket
        self.replay_guard = replay_guard or MemoryReplayGuard()
        self.clock = clock
        self.admin_unbound_hosts = tuple(
            ipaddress.ip_network(h, strict=False) for h in admin_unbound_hosts
        )
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()
        self._decoders: anyio.CapacityLimiter | None = None

    async def identify_async(
        self,
        munge_credential: str | None,
        authorization: str | None,
        binding: bytes | None = None,
        client_host: str | None = None,
    ) -> Identity:
        """:meth:`identify` for the event loop.

        munged is asked, and the replay guard (one short INSERT on the store's connection pool)
        written, from one of :data:`DECODE_THREADS` worker threads of its own, so a munged that
        hangs ties up those threads and not the ones other requests need. A token needs no I/O
        and is read inline.
        """
        if not (munge_credential and "munge" in self.modes):
            return self.identify(None, authorization)
        if self._decoders is None:
            self._decoders = anyio.CapacityLimiter(DECODE_THREADS)
        return await anyio.to_thread.run_sync(
            self.identify,
            munge_credential,
            authorization,
            binding,
            client_host,
            limiter=self._decoders,
        )

    def identify(
        self,
        munge_credential: str | None,
        authorization: str | None,
        binding: bytes | None = None,
        client_host: str | None = None,
    ) -> Identity:
        """Blocking (munged is asked, then the replay guard): the daemon uses
        :meth:`identify_async`. ``binding``: :func:`qhpc_lab.munge.request_binding` of the
        request the credential came with; ``client_host``: the address it came from."""
        if munge_credential and "munge" in self.modes:
            decoded = self._decode(munge_credential)
            bound = self._check_binding(decoded.payload, binding)
            identity = self._first_use(munge_credential, decoded)
            if identity.admin and not bound and not self._unbound_allowed(client_host):
                return Identity(identity.user_id, admin=False)
            return identity
        if authorization and "token" in self.modes:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise AuthError(401, "Authorization header must be 'Bearer <token>'")
            assert self.token_secret is not None
            return read_token(self.token_secret, token.strip(), now=self.clock())
        wanted = " or ".join(
            {"munge": "an X-Munge-Cred header", "token": "an 'Authorization: Bearer' token"}[m]
            for m in self.modes
        )
        raise AuthError(401, f"authentication required: send {wanted}")

    def _decode(self, credential: str) -> munge.Credential:
        """munged's verdict, as the HTTP refusal it means."""
        try:
            return munge.decode(credential, self.munge_socket)
        except munge.MungeError as err:
            if err.code in _MUNGED_DOWN:
                raise AuthError(
                    503,
                    f"MUNGE is unavailable on the scheduler host: {err}",
                    retry_after=MUNGE_RETRY_AFTER_S,
                ) from None
            if err.code == munge.NOT_INSTALLED:
                raise AuthError(503, f"MUNGE is unavailable on the scheduler host: {err}") from None
            if err.code == munge.CRED_REPLAYED:
                raise _replayed() from None
            raise AuthError(401, f"MUNGE credential refused: {err}") from None

    def _unbound_allowed(self, client_host: str | None) -> bool:
        """Whether an admin's unbound credential counts from ``client_host``."""
        try:
            address = ipaddress.ip_address(client_host or "")
        except ValueError:
            return False
        return any(address in network for network in self.admin_unbound_hosts)

    @staticmethod
    def _check_binding(payload: bytes, binding: bytes | None) -> bool:
        """Whether the credential is bound to this request; one bound to another is refused."""
        if not payload.startswith(munge.REQUEST_BINDING):
            return False
        if payload != binding:
            raise AuthError(
                401,
                "MUNGE credential was made for another request (method, path or body differ); "
                "send one made for this request",
            )
        return True

    def _first_use(self, credential: str, decoded: munge.Credential) -> Identity:
        """The credential's identity, unless this scheduler accepted it before."""
        if not self.replay_guard.first_use(munge.fingerprint(credential), decoded.expires_at):
            raise _replayed()
        self._prune_now_and_then()
        uid = str(decoded.uid)
        return Identity(uid, uid in self.admin_uids)

    def _prune_now_and_then(self) -> None:
        now = self.clock()
        if now < self._next_prune or not self._prune_lock.acquire(blocking=False):
            return
        try:
            self._next_prune = now + PRUNE_INTERVAL_S
            self.replay_guard.forget_expired(now)
        finally:
            self._prune_lock.release()


def _replayed() -> AuthError:
    return AuthError(401, "MUNGE credential was replayed; send a fresh one")
