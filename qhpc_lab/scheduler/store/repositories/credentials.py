"""Credential memory: the replay guard of :mod:`qhpc_lab.scheduler.auth`."""

from __future__ import annotations

import sqlalchemy as sa

from qhpc_lab.scheduler.store.repositories.base import Repository
from qhpc_lab.scheduler.store.schema import seen_credentials

_REMEMBER = seen_credentials.insert()


class CredentialRepository(Repository):
    def first_use(self, digest: str, expires_at: float) -> bool:
        """Remember an accepted credential until ``expires_at``; False if it was seen before.

        One INSERT, which a replay makes conflict (a prepared statement: it runs per request).
        """
        try:
            with self._write() as conn:
                conn.execute(_REMEMBER, {"digest": digest, "expires_at": expires_at})
        except sa.exc.IntegrityError:
            return False
        return True

    def forget_expired(self, now: float) -> int:
        """Drop remembered credentials that expired before ``now``; returns how many."""
        with self._write() as conn:
            return conn.execute(
                seen_credentials.delete().where(seen_credentials.c.expires_at < now)
            ).rowcount
