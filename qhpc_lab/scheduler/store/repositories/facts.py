"""Device facts: small JSON values the daemon keeps across restarts (calibration, drain,
maintenance, the policy set at run time, the QPU job in flight)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from qhpc_lab.scheduler.store.repositories.base import Repository, put_fact
from qhpc_lab.scheduler.store.schema import facts


class FactRepository(Repository):
    def get_fact(self, key: str) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(facts.c.value).where(facts.c.key == key)).first()
        return json.loads(row.value) if row else None

    def get_facts(self, keys: list[str]) -> dict[str, Any]:
        """Several facts read together (those never written are absent)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(facts).where(facts.c.key.in_(keys))).all()
        return {row.key: json.loads(row.value) for row in rows}

    def set_fact(self, key: str, value: Any) -> None:
        self.set_facts({key: value})

    def set_dispatching_fact(self, key: str, value: Any) -> None:
        """A fact only the dispatching replica may write (the QPU job in flight): fenced, so a
        replica that lost the lease cannot bring back what its successor settled."""
        with self._write() as conn:
            self._dispatching(conn)
            put_fact(conn, key, value)

    def delete_fact(self, key: str) -> None:
        with self._write() as conn:
            conn.execute(facts.delete().where(facts.c.key == key))

    def set_facts(self, values: dict[str, Any]) -> None:
        """Several facts in one transaction (a calibration's time and number go together)."""
        with self._write() as conn:
            for key, value in values.items():
                put_fact(conn, key, value)

    def set_shared_facts(self, values: dict[str, Any]) -> None:
        """Facts every HA replica acts on (drain, maintenance, policy, a calibration request),
        written with a new :data:`~.base.SHARED_STATE` in one transaction."""
        with self._write() as conn:
            for key, value in values.items():
                put_fact(conn, key, value)
            self._shared_changed(conn)
