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
