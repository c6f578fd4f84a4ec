"""The scheduler's refusal: what its services raise and the API answers as an error document.

Framework-free, so that every service can raise it; :mod:`qhpc_lab.scheduler.errors` turns it
into the HTTP answer.
"""

from __future__ import annotations

from typing import Any


class SchedulerError(Exception):
    """A refusal the API turns into a 4xx/5xx: ``status`` and a message naming the rule."""

    def __init__(
        self,
        status: int,
        message: str,
        rule: str | None = None,
        retry_after: float | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.rule = rule
        self.retry_after = retry_after
        self.fields = fields or {}
        """What the error document has beside ``detail`` and ``rule`` (a quota's numbers)."""
