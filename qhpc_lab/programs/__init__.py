"""Programs: the envelope every part exchanges, the one conversion out of the SDKs
(:func:`to_program`), and validation against a device."""

from qhpc_lab.programs.adapters import NativeProgram, has_analog_gate, to_program
from qhpc_lab.programs.bounds import with_declared_variables
from qhpc_lab.programs.envelope import (
    FORMATS,
    DeviceRuleViolation,
    Program,
    ProgramError,
    format_refusal,
)
from qhpc_lab.programs.validation import (
    VALIDATION_BUDGET_S,
    VALIDATION_MEMORY_BYTES,
    DeviceSpec,
    ProgramFacts,
    await_validation_worker,
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
    "NativeProgram",
    "Program",
    "ProgramError",
    "ProgramFacts",
    "await_validation_worker",
    "format_refusal",
    "has_analog_gate",
    "start_validation_worker",
    "stop_validation_worker",
    "to_program",
    "validate",
    "validate_async",
    "validation_worker_pid",
    "warm_up",
    "with_declared_variables",
]
