"""Who the tests are to a scheduler: its token secret, three uids, their bearer headers."""

from __future__ import annotations

from qhpc_lab.scheduler.auth import make_token

SECRET = "test-secret"
"""The token secret of every scheduler the tests start."""
USER, OTHER, ADMIN = "1000", "1001", "0"


def auth_header(uid: str, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(SECRET, uid, admin)}"}
