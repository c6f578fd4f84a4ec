"""Reservations: windows in which the operator gives the whole QPU to one owner."""

from __future__ import annotations

import sqlalchemy as sa

from qhpc_lab.scheduler.store.repositories.base import Repository
from qhpc_lab.scheduler.store.rows import ReservationOverlap, ReservationRow
from qhpc_lab.scheduler.store.schema import reservations


class ReservationRepository(Repository):
    def add_reservation(
        self,
        owner_kind: str,
        owner: str,
        starts_at: float,
        ends_at: float,
        created_by: str | None = None,
    ) -> ReservationRow:
        """Reserve ``[starts_at, ends_at)``; :class:`ReservationOverlap` when another
        reservation holds part of it (checked in the same transaction)."""
        with self._write() as conn:
            if conn.dialect.name == "postgresql":  # two overlapping inserts: one waits, then fails
                conn.execute(sa.text("LOCK TABLE reservations IN SHARE ROW EXCLUSIVE MODE"))
            clash = conn.execute(
                sa.select(reservations)
                .where(reservations.c.starts_at < ends_at, reservations.c.ends_at > starts_at)
                .order_by(reservations.c.starts_at)
            ).first()
            if clash is not None:
                raise ReservationOverlap(ReservationRow(**clash._mapping))
            values = dict(
                owner_kind=owner_kind,
                owner=owner,
                starts_at=starts_at,
                ends_at=ends_at,
                created_at=self.clock(),
                created_by=created_by,
            )
            row = conn.execute(reservations.insert().returning(*reservations.c), values).one()
        return ReservationRow(**row._mapping)

    def list_reservations(self, ending_after: float | None = None) -> list[ReservationRow]:
        """Reservations by start; with ``ending_after``, only those not ended by then."""
        query = sa.select(reservations).order_by(reservations.c.starts_at)
        if ending_after is not None:
            query = query.where(reservations.c.ends_at > ending_after)
        with self.engine.connect() as conn:
            return [ReservationRow(**r._mapping) for r in conn.execute(query)]

    def cancel_reservation(self, reservation_id: int) -> ReservationRow | None:
        """Delete a reservation; it, or None when there was none with this id."""
        with self._write() as conn:
            row = conn.execute(
                reservations.delete()
                .where(reservations.c.id == reservation_id)
                .returning(*reservations.c)
            ).first()
        return ReservationRow(**row._mapping) if row else None
