"""The caps on what one user or session may have queued, as a pure rule: admission checks them
against the in-memory queue first (a refusal costs no validation), and the store again inside
the transaction that queues the job, so concurrent submissions never pass a cap together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueLimit:
    """A cap on the jobs (and shots) one scope holds active, waiting or running."""

    scope: str
    """``user``, ``session`` or ``class`` (one user's jobs of one class)."""
    key: str
    """The user's id (``user``, ``class``) or the session's."""
    max_jobs: int
    """0: no cap on jobs."""
    max_shots: int = 0
    """0: no cap on shots."""
    job_class: str | None = None
    """The class a ``class`` cap counts."""

    @property
    def counter(self) -> str:
        """The queue's counter of this scope (:meth:`QueueState.queued`)."""
        if self.scope == "class":
            return f"class:{self.job_class}:{self.key}"
        return f"{self.scope}:{self.key}"


class AdmissionRefused(Exception):
    """A submission the queue's caps or its session refuse: ``status`` and ``rule`` are what
    the API answers (429 for a cap, 403 for a revoked session)."""

    def __init__(self, status: int, message: str, rule: str) -> None:
        super().__init__(message)
        self.status = status
        self.rule = rule


def refusal(
    limit: QueueLimit, held_jobs: int, held_shots: int, shots: int
) -> AdmissionRefused | None:
    """Why a job of ``shots`` does not fit ``limit`` beside what its scope holds, or None."""
    if limit.scope == "class":
        if limit.max_jobs and held_jobs + 1 > limit.max_jobs:
            return AdmissionRefused(
                429,
                f"user {limit.key} has {held_jobs} {limit.job_class} jobs queued; this site "
                f"allows {limit.max_jobs} (wait for one to finish, or use another class)",
                f"class_limits.{limit.job_class}.max_queued_per_user",
            )
        return None
    if limit.max_jobs and held_jobs + 1 > limit.max_jobs:
        return AdmissionRefused(
            429,
            f"{limit.scope} {limit.key} has {held_jobs} jobs queued; the limit is "
            f"{limit.max_jobs} (wait for some to finish)",
            f"max_queued_jobs_per_{limit.scope}",
        )
    if limit.max_shots and held_shots + shots > limit.max_shots:
        return AdmissionRefused(
            429,
            f"{limit.scope} {limit.key} has {held_shots} shots queued and asks for {shots} "
            f"more; the limit is {limit.max_shots}",
            f"max_queued_shots_per_{limit.scope}",
        )
    return None
