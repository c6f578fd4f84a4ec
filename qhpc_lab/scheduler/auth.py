"""Who is calling: a MUNGE credential (HPC) or a bearer token (laptops, tests).

MUNGE identity is the uid inside a credential that the site's munged vouches for; replayed
credentials are refused (QRMI makes a fresh one per request, so this costs clients nothing).
Tokens are HMAC-signed ``{uid, admin}`` claims made by ``qhpc scheduler token``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from qhpc_lab import munge

AUTH_MODES = ("munge", "token")
MAX_UID_LENGTH = 64
"""What the store keeps of a user id (PostgreSQL refuses longer)."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    admin: bool


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def make_token(secret: str, uid: int | str, admin: bool = False) -> str:
    claims = base64.urlsafe_b64encode(json.dumps({"uid": str(uid), "admin": admin}).encode())
    signature = hmac.new(secret.encode(), claims, hashlib.sha256).hexdigest()
    return f"qhpc.{claims.decode()}.{signature}"


def read_token(secret: str, token: str) -> Identity:
    try:
        prefix, claims, signature = token.split(".")
    except ValueError:
        raise AuthError(401, "malformed bearer token") from None
    expected = hmac.new(secret.encode(), claims.encode(), hashlib.sha256).hexdigest()
    # bytes, not str: compare_digest raises TypeError on a non-ASCII str (a forged header)
    if prefix != "qhpc" or not hmac.compare_digest(expected.encode(), signature.encode()):
        raise AuthError(401, "invalid bearer token (bad signature)")
    data = json.loads(base64.urlsafe_b64decode(claims))
    uid = str(data["uid"])
    if not uid or len(uid) > MAX_UID_LENGTH:
        raise AuthError(401, f"token uid must be 1 to {MAX_UID_LENGTH} characters")
    return Identity(user_id=uid, admin=bool(data.get("admin")))


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
    ) -> None:
        unknown = set(modes) - set(AUTH_MODES)
        if unknown or not modes:
            raise ValueError(f"auth modes must be among {AUTH_MODES}, got {modes}")
        if "token" in modes and not token_secret:
            raise ValueError("token auth needs a token secret")
        self.modes = modes
        self.admin_uids = admin_uids
        self.token_secret = token_secret
        self.munge_socket = munge_socket

    def identify(self, munge_credential: str | None, authorization: str | None) -> Identity:
        """Blocking (munged is asked over its socket): call it from a worker thread."""
        if munge_credential and "munge" in self.modes:
            try:
                cred = munge.decode(munge_credential, self.munge_socket)
            except munge.MungeError as err:
                if err.code == munge.CRED_REPLAYED:
                    raise AuthError(
                        401, "MUNGE credential was replayed; send a fresh one"
                    ) from None
                raise AuthError(401, f"MUNGE credential refused: {err}") from None
            uid = str(cred.uid)
            return Identity(uid, uid in self.admin_uids)
        if authorization and "token" in self.modes:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise AuthError(401, "Authorization header must be 'Bearer <token>'")
            assert self.token_secret is not None
            return read_token(self.token_secret, token.strip())
        wanted = " or ".join(
            {"munge": "an X-Munge-Cred header", "token": "an 'Authorization: Bearer' token"}[m]
            for m in self.modes
        )
        raise AuthError(401, f"authentication required: send {wanted}")
