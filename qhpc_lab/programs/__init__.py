"""Programs: the envelope every part exchanges, SDK adapters, and validation against a device."""

from qhpc_lab.programs.adapters import from_pulser, from_qiskit, to_program
from qhpc_lab.programs.envelope import FORMATS, DeviceRuleViolation, Program, ProgramError
from qhpc_lab.programs.validation import (
    VALIDATION_BUDGET_S,
    VALIDATION_MEMORY_BYTES,
    DeviceSpec,
    ProgramFacts,
    start_validation_worker,
    stop_validation_worker,
    validate,
    validate_async,
    validation_worker_pid,
    warm_up,
)

__all__ = [
    "FORMATS",
    "VALIDATION_BUDGET_S",
    "VALIDATION_MEMORY_BYTES",
    "DeviceRuleViolation",
    "DeviceSpec",
    "Program",
    "ProgramError",
    "ProgramFacts",
    "from_pulser",
    "from_qiskit",
    "start_validation_worker",
    "stop_validation_worker",
    "to_program",
    "validate",
    "validate_async",
    "validation_worker_pid",
    "warm_up",
]
