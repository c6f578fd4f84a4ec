"""The Program envelope: the one JSON form a quantum program takes across every boundary.

``{format, body, shots, name?, variables?}`` — ``body`` is text in the SDK's own serial form
(Pulser abstract representation, OpenQASM 3, ...), so the envelope never depends on an SDK
being importable where it travels.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

FORMATS = ("pulser", "qasm3")
"""Formats this release can validate and execute; others are refused with the list. A device
runs some of them (an analog neutral-atom QPU: pulser only; the in-kernel emulator: all)."""

_WHAT = {"pulser": "an analog program", "qasm3": "a gate circuit"}


def format_refusal(fmt: str, accepted: Collection[str], where: str) -> str | None:
    """Why ``where`` (a device, or a target and its device) cannot run a ``fmt`` program and
    where it can go instead; None when ``fmt`` is ``accepted``. The scheduler answers it (a
    422, rule ``format``) and the kernel client raises it before sending anything."""
    if fmt in accepted:
        return None
    runs = (
        f"it runs {' and '.join(accepted)} programs only"
        if accepted
        else "this release runs no program on it"
    )
    elsewhere = 'the in-kernel emulator, qhpc_lab.submit(program, target="emulator")'
    if fmt == "qasm3" and accepted:
        elsewhere += ", or to a gate-based QPU's QRMI resource"
    what = f" ({_WHAT[fmt]})" if fmt in _WHAT else ""
    return f"{where} cannot run {fmt!r} programs{what}: {runs}. Send it to {elsewhere}"


class ProgramError(ValueError):
    """A program that is malformed or that no target can accept, whatever the device.

    ``rule`` names what was broken (``format``, ``body``, ``shots``, ``envelope``), so an API
    can answer with it as it does with device rules.
    """

    def __init__(self, message: str, rule: str = "program") -> None:
        super().__init__(message)
        self.rule = rule


class DeviceRuleViolation(ProgramError):
    """The program is well formed but this device cannot run it."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}", rule)


MAX_VARIABLES = 256
"""Variables one program may bind: a Pulser sequence declares a handful."""
MAX_VARIABLE_VALUES = 4_096
"""Numbers a program's variables hold together (each entry of an array variable counts)."""
MAX_VARIABLE_NAME = 128
"""Characters of one variable's name."""


def check_variables(variables: Any) -> None:
    """ProgramError unless ``variables`` maps at most :data:`MAX_VARIABLES` names to numbers
    or flat lists of numbers (Pulser's variables, a sequence's only ones), holding at most
    :data:`MAX_VARIABLE_VALUES` numbers: a map of any size or depth is refused before it is
    stored or parsed again."""
    if not isinstance(variables, dict):
        raise ProgramError(
            f"variables must be a JSON object, not {type(variables).__name__}", "variables"
        )
    if len(variables) > MAX_VARIABLES:
        raise ProgramError(
            f"{len(variables)} variables given; the limit is {MAX_VARIABLES}", "variables"
        )
    values = 0
    for name, value in variables.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_VARIABLE_NAME:
            raise ProgramError(
                f"a variable's name must be 1 to {MAX_VARIABLE_NAME} characters", "variables"
            )
        entries = value if isinstance(value, list) else [value]
        if not all(_is_number(entry) for entry in entries):
            raise ProgramError(
                f"variable {name!r} must be a number or a list of numbers", "variables"
            )
        values += len(entries)
        if values > MAX_VARIABLE_VALUES:
            raise ProgramError(
                f"the variables hold more than {MAX_VARIABLE_VALUES} numbers", "variables"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_shots(shots: Any) -> None:
    """ProgramError unless ``shots`` is a positive integer (booleans are not)."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots <= 0:
        raise ProgramError(f"shots must be a positive integer, got {shots!r}", "shots")


@dataclass(frozen=True)
class Program:
    format: str
    body: str
    shots: int
    name: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ProgramError(
                f"unknown program format {self.format!r}; supported: {', '.join(FORMATS)}",
                "format",
            )
        if not isinstance(self.body, str) or not self.body.strip():
            raise ProgramError("program body is empty", "body")
        check_shots(self.shots)
        check_variables(self.variables)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not data["variables"]:
            del data["variables"]
        if data["name"] is None:
            del data["name"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Program:
        if not isinstance(data, dict):
            raise ProgramError(
                f"a program envelope is a JSON object, not {type(data).__name__}", "envelope"
            )
        unknown = set(data) - {"format", "body", "shots", "name", "variables"}
        if unknown:
            raise ProgramError(f"unknown envelope fields: {', '.join(sorted(unknown))}", "envelope")
        try:
            return cls(
                format=data["format"],
                body=data["body"],
                shots=data["shots"],
                name=data.get("name"),
                variables=data.get("variables") or {},
            )
        except KeyError as missing:
            raise ProgramError(f"envelope field {missing} is missing", "envelope") from None

    @classmethod
    def from_json(cls, text: str) -> Program:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ProgramError(f"program envelope is not valid JSON: {err}", "envelope") from None
        return cls.from_dict(data)
