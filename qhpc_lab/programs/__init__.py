"""Programs: the envelope every part exchanges, SDK adapters, and validation against a device."""

from qhpc_lab.programs.adapters import from_pulser, from_qiskit, to_program
from qhpc_lab.programs.envelope import FORMATS, Program, ProgramError
from qhpc_lab.programs.validation import (
    DeviceRuleViolation,
    DeviceSpec,
    ProgramFacts,
    validate,
    warm_up,
)

__all__ = [
    "FORMATS",
    "DeviceRuleViolation",
    "DeviceSpec",
    "Program",
    "ProgramError",
    "ProgramFacts",
    "from_pulser",
    "from_qiskit",
    "to_program",
    "validate",
    "warm_up",
]
