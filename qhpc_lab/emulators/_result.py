"""An emulation's result and how it was obtained, in one JSON form.

``qhpc emulate`` writes it on a compute node and the cluster emulator target reads it back, so
the form is versioned (:data:`EMULATION_FORMAT`) and read strictly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

EMULATION_FORMAT = "qhpc-emulation/1"
"""The ``format`` field of an Emulation document; a reader refuses any other."""


@dataclass(frozen=True)
class Approximation:
    """How far an approximate engine (emu-mps) may be from the exact state."""

    max_bond_dim: int
    """The bond dimension cap χ the state was truncated to."""
    precision: float
    """The truncation precision: singular values below it were dropped at each step."""
    dt_ns: float
    """The time step of the evolution."""
    reached_bond_dim: int | None = None
    """The largest bond dimension the state actually reached (= the cap: truncation bit)."""

    def describe(self) -> str:
        """``χ ≤ 32 (reached 32), precision 1e-05, dt 20 ns``."""
        reached = "" if self.reached_bond_dim is None else f" (reached {self.reached_bond_dim})"
        return (
            f"χ ≤ {self.max_bond_dim}{reached}, precision {self.precision:g}, dt {self.dt_ns:g} ns"
        )


@dataclass(frozen=True)
class Emulation:
    """Counts and the facts a user needs to trust them: which engine ran, with which
    approximation (None: exact), on which device and node, for how long."""

    counts: dict[str, int]
    engine: str
    approximation: Approximation | None
    device: str
    """``cpu`` or ``cuda:N``."""
    node: str
    """The host name the evolution ran on."""
    atoms: int
    duration_ns: int
    shots: int
    started_at: str
    """When the evolution started, RFC 3339 UTC (:func:`~qhpc_lab.wire.times.iso_time`)."""
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def approximate(self) -> bool:
        return self.approximation is not None

    def describe(self) -> str:
        """One line for a log or a notice: engine, approximation, where, how long."""
        how = f"approximate: {self.approximation.describe()}" if self.approximation else "exact"
        return (
            f"{self.engine} ({how}) on {self.node} {self.device}: {self.atoms} atoms, "
            f"{self.shots} shots in {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"format": EMULATION_FORMAT, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Emulation:
        """The Emulation in ``data``; ValueError naming the field that is wrong."""
        if not isinstance(data, dict) or data.get("format") != EMULATION_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not an emulation result ({EMULATION_FORMAT}): format {found!r}")
        fields = dict(data)
        del fields["format"]
        try:
            approximation = fields.pop("approximation")
            return cls(
                approximation=None if approximation is None else Approximation(**approximation),
                **fields,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"emulation result is malformed: {err}") from None

    @classmethod
    def from_json(cls, text: str) -> Emulation:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"emulation result is not valid JSON: {err}") from None
        return cls.from_dict(data)
