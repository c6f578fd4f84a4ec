"""Hybrid loops: the jobs of one variational loop, marked as such.

A scheduler may hold the QPU for a loop between two of its jobs, for at most the think time
the loop expects, when that costs the others less than it saves the loop (docs/policy.md,
rule 9). "Session" means only a Slurm job's QPU share (Warden's); a loop lives inside one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from qhpc_lab.client._job import Job
from qhpc_lab.client._target import LoopMark


@dataclass
class Loop:
    """One hybrid loop: its id, the think time it declares, and the jobs submitted in it.

    Without a declared ``think_time_s`` each submission sends the loop's last pause (from the
    previous job's end to this submission) as the pause expected after it; the first sends
    none, and the scheduler then allows its longest hold."""

    name: str = field(default_factory=lambda: f"loop-{uuid.uuid4().hex[:12]}")
    think_time_s: float | None = None
    jobs: list[Job] = field(default_factory=list)

    def mark(self) -> LoopMark:
        """What the next submission carries."""
        if self.think_time_s is not None:
            return LoopMark(self.name, self.think_time_s)
        return LoopMark(self.name, self.last_pause_s())

    def last_pause_s(self) -> float | None:
        """Seconds since the last job of the loop ended, if it has (as its target said)."""
        if not self.jobs or self.jobs[-1].state.finished_at is None:
            return None
        ended = self.jobs[-1].state.finished_at
        return max(0.0, (datetime.now(UTC) - ended).total_seconds())

    def __str__(self) -> str:
        think = "last pause" if self.think_time_s is None else f"{self.think_time_s:g} s"
        return f"loop {self.name} ({len(self.jobs)} jobs, think time: {think})"


Session = Loop
"""Deprecated name of :class:`Loop` (a session is a Slurm job's QPU share), kept for one
release."""
