"""Sweeps: one program with many ``(shots, variables)`` sets, queued and charged as one job.

Pure: the plan a submission's sets make (each set checked against the variables the program
declares, without building the program again), and which set a job's next chunk runs. A
sweep's progress is its job's ``shots_done`` over the sets in order, so a restart resumes at
the set the store recorded, and a chunk never spans two sets.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qhpc_lab.programs import Program, ProgramError
from qhpc_lab.programs.envelope import check_shots, check_variables

MAX_TOTAL_SHOTS = 2**31 - 1
"""Shots one job's row holds (a 32-bit column on every backend), whatever the site allows."""


class SweepRefused(ProgramError):
    """A set of a sweep is refused: ``index`` names it (0-based, in the submission's order)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"sweep set {index}: {message}", "sweep")
        self.index = index


@dataclass(frozen=True)
class SweepPlan:
    """A sweep's sets in order: the shots and the full variables of each."""

    shots: tuple[int, ...]
    variables: tuple[dict[str, Any], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ends", tuple(itertools.accumulate(self.shots)))

    @property
    def total_shots(self) -> int:
        return self._ends[-1]  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.shots)

    def set_at(self, shots_done: int) -> int:
        """The set the job's next shot belongs to, after ``shots_done`` shots."""
        return bisect.bisect_right(self._ends, shots_done)  # type: ignore[attr-defined]

    def sets_done(self, shots_done: int) -> int:
        return self.set_at(shots_done)

    def chunk(self, program: Program, shots_done: int, shots: int) -> tuple[Program, int, int]:
        """The set's program, the chunk's shots (at most ``shots``, never past the set's end)
        and the shots the set still needs, for a job at ``shots_done``."""
        index = self.set_at(shots_done)
        end = self._ends[index]  # type: ignore[attr-defined]
        remaining = end - shots_done
        set_program = Program(
            program.format, program.body, self.shots[index], program.name, self.variables[index]
        )
        return set_program, min(shots, remaining), remaining

    def rows(self) -> list[tuple[int, str]]:
        """The sets as the store keeps them: shots, and variables as JSON text."""
        return [(n, json.dumps(v)) for n, v in zip(self.shots, self.variables, strict=True)]


def stored_plan(rows: Sequence[Any]) -> SweepPlan:
    """The plan of a sweep as the store keeps its sets (``SweepSetRow``, in order)."""
    return SweepPlan(tuple(r.shots for r in rows), tuple(r.variables for r in rows))


def declared_variables(program: Program) -> dict[str, Any]:
    """What the program's Pulser sequence declares: name → its abstract representation's spec
    (other formats declare none)."""
    if program.format != "pulser":
        return {}
    declared = json.loads(program.body).get("variables")
    return declared if isinstance(declared, dict) else {}


def plan_sweep(
    program: Program,
    sets: Sequence[tuple[int, dict[str, Any]]],
    max_sets: int,
    max_shots: int,
    max_runs: int | None,
) -> SweepPlan:
    """The plan of ``sets`` (shots, variables) for ``program`` (already checked once, with its
    own variables the common ones): each set's variables are checked against what the program
    declares — names, numbers, array sizes — and completed with ``program.variables``, which
    ``with_declared_variables`` filled with the defaults. SweepRefused names the first bad set;
    ProgramError (rule ``sweep``) when the sweep is over its bounds."""
    if not sets:
        raise ProgramError("a sweep needs at least one set", "sweep")
    if max_sets and len(sets) > max_sets:
        raise ProgramError(
            f"the sweep has {len(sets)} sets; this site allows at most {max_sets} per job",
            "sweep",
        )
    declared = declared_variables(program)
    shots_of: list[int] = []
    variables_of: list[dict[str, Any]] = []
    for index, (shots, variables) in enumerate(sets):
        try:
            check_shots(shots)
            check_variables(variables)
        except ProgramError as err:
            raise SweepRefused(index, str(err)) from None
        if max_runs is not None and shots > max_runs:
            raise SweepRefused(index, f"{shots} shots; the device allows at most {max_runs}")
        for name, value in variables.items():
            spec = declared.get(name)
            if spec is None:
                names = ", ".join(sorted(declared)) or "none"
                raise SweepRefused(
                    index, f"the sequence declares no variable {name!r} (it declares {names})"
                )
            size = _declared_size(spec)
            given = len(value) if isinstance(value, list) else 1
            if size is not None and given != size:
                raise SweepRefused(
                    index, f"variable {name!r} has {given} values; the sequence declares {size}"
                )
        shots_of.append(shots)
        variables_of.append({**program.variables, **variables})
    total = sum(shots_of)
    if total > MAX_TOTAL_SHOTS:
        raise ProgramError(
            f"the sweep asks for {total} shots in all; a job holds at most {MAX_TOTAL_SHOTS}",
            "sweep",
        )
    if max_shots and total > max_shots:
        raise ProgramError(
            f"the sweep asks for {total} shots in all; this site allows at most {max_shots} "
            "per sweep",
            "sweep",
        )
    return SweepPlan(tuple(shots_of), tuple(variables_of))


def _declared_size(spec: Any) -> int | None:
    """The number of values a declared Pulser variable holds (its ``value`` list's length)."""
    if isinstance(spec, dict) and isinstance(spec.get("value"), list):
        return len(spec["value"])
    return None
