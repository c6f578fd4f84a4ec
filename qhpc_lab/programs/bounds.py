"""Static bounds on a program's size, checked before any SDK parses it.

Parsing is the expensive part of validation (Qiskit's OpenQASM 3 importer takes about half a
millisecond an operation), and an emulator runs loops as written, so a short program can ask
for a billion operations. This scan reads the text once, with regular expressions, and refuses
what is too big to parse or to run, naming the limit and the program's value. It is an upper
bound: both branches of an ``if`` count, and every loop runs its whole range.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import operator
import re
from collections.abc import Callable

from qhpc_lab.programs.envelope import DeviceRuleViolation, Program, ProgramError

QASM_MAX_OPERATIONS = 5_000
"""Statements an OpenQASM 3 program may execute once loops and gate calls are unrolled.

At this size Qiskit's importer needs about 2.5 s (docs/scheduler.md, "Program budgets")."""

QASM_MAX_QUBITS = 64
"""Qubits an OpenQASM 3 program may declare on a device that states no atom limit."""

PULSER_MAX_OPERATIONS = 2_000
"""Operations (channel declarations, pulses, delays, ...) in a Pulser abstract representation."""

_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_DELIMITER = re.compile(r"[{};]")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_FOR = re.compile(r"^for\s+(?:[A-Za-z_]\w*(?:\[[^\]]*\])?\s+)?([A-Za-z_]\w*)\s+in\s*(.*)$", re.S)
_RANGE = re.compile(r"^\[([^\]:]*):([^\]:]*)(?::([^\]:]*))?\]$")
_DEFINITION = re.compile(r"^(gate|def)\s+([A-Za-z_]\w*)")
_CONST = re.compile(r"^const\s+\w+(?:\[[^\]]*\])?\s+([A-Za-z_]\w*)\s*=\s*(.+)$", re.S)
_QUBITS = re.compile(
    r"^(?:qubit\s*(?:\[(.+)\])?\s+[A-Za-z_]\w*|qreg\s+[A-Za-z_]\w*\s*(?:\[(.+)\])?)$"
)
_PHYSICAL = re.compile(r"\$(\d+)")
_LITERAL_BEFORE = re.compile(r"(?:[=,(\[{]|\bin)\s*$")
_BRACE = re.compile(r"[{}]")
_ZEROS = itertools.repeat(0)
_HEADER = re.compile(r"^(?:OPENQASM|include|qubit|qreg|bit|creg)\b")
"""Statements that run nothing: they count towards the text's size, not its operations."""
_WHILE = re.compile(r"^while\b")
_DIGIT_SEPARATOR = re.compile(r"(?<=\d)_(?=\d)")

_OPERATORS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Div: operator.floordiv,
}


class _Frame:
    """An open ``{`` block: its multiplier, and the gate or subroutine it defines, if any."""

    def __init__(self, repeat: int, defines: str | None = None) -> None:
        self.repeat = repeat
        self.defines = defines
        self.cost = 0


def check_qasm3(body: str, device_name: str, max_atoms: int | None) -> None:
    """Refuse an OpenQASM 3 body that would run too many operations or declare more qubits
    than the device has atoms. Linear in the text; stops counting once past the limit."""
    text = _COMMENTS.sub(" ", body)
    costs: dict[str, int] = {}
    consts: dict[str, int] = {}
    frames = [_Frame(1)]
    statements = qubits = position = header_start = 0
    while (match := _DELIMITER.search(text, position)) is not None:
        delimiter, position = match.group(), match.end()
        if delimiter == "{" and _LITERAL_BEFORE.search(text, header_start, match.start()):
            position = _after_literal(text, match.start())  # a set or array literal
            continue
        statement = text[header_start : match.start()].strip()
        header_start = position
        if delimiter == "{":
            frames.append(_open(statement, consts))
        elif delimiter == "}":
            if len(frames) > 1:
                _close(frames, costs)
        elif statement:
            statements += 1
            qubits = _declared_qubits(statement, consts, qubits)
            if max_atoms is not None and qubits > max_atoms:
                raise DeviceRuleViolation(
                    "max_atom_num",
                    f"circuit uses {qubits} qubits; {device_name} has at most {max_atoms} atoms",
                )
            if qubits > QASM_MAX_QUBITS:
                raise ProgramError(
                    f"circuit declares {qubits} qubits; the limit is {QASM_MAX_QUBITS}",
                    "qasm_qubits",
                )
            if not _HEADER.match(statement):
                frames[-1].cost += 1
                if costs:
                    frames[-1].cost += sum(map(costs.get, _IDENTIFIER.findall(statement), _ZEROS))
            operations = max(statements, _unrolled(frames))
            if operations > QASM_MAX_OPERATIONS:
                raise ProgramError(
                    f"the program runs at least {operations} operations once its loops and "
                    f"gate calls are unrolled; the limit is {QASM_MAX_OPERATIONS}",
                    "qasm_operations",
                )


def _open(header: str, consts: dict[str, int]) -> _Frame:
    if _WHILE.match(header):
        raise ProgramError(
            "while loops are not accepted: how often they run cannot be bounded before the "
            "program runs; use a for loop over a constant range",
            "qasm_while",
        )
    if (defined := _DEFINITION.match(header)) is not None:
        return _Frame(1, defined.group(2))
    if (loop := _FOR.match(header)) is not None:
        return _Frame(_iterations(loop.group(2).strip(), consts))
    return _Frame(1)


def _close(frames: list[_Frame], costs: dict[str, int]) -> None:
    frame = frames.pop()
    if frame.defines is not None:
        costs[frame.defines] = max(1, frame.cost)
    else:
        frames[-1].cost += frame.repeat * frame.cost


def _declared_qubits(statement: str, consts: dict[str, int], qubits: int) -> int:
    """The qubit count after ``statement``: declarations add, ``$n`` needs n + 1."""
    if not statement.startswith(("const", "qubit", "qreg", "$")) and "$" not in statement:
        return qubits
    if (const := _CONST.match(statement)) is not None:
        value = _integer(const.group(2), consts)
        if value is not None:
            consts[const.group(1)] = value
    if (declared := _QUBITS.match(statement)) is not None:
        size = declared.group(1) or declared.group(2)
        count = 1 if size is None else _integer(size, consts)
        if count is None:
            raise ProgramError(
                f"qubit register size {size!r} is not a constant integer", "qasm_qubits"
            )
        qubits += count
    if "$" in statement:
        for physical in _PHYSICAL.findall(statement):
            qubits = max(qubits, int(physical) + 1)
    return qubits


def _iterations(iterable: str, consts: dict[str, int]) -> int:
    """How often a ``for`` loop runs: a range ``[a:b]``/``[a:s:b]`` (inclusive) or a set."""
    if iterable.startswith("{"):
        return iterable.count(",") + 1
    bounds = _RANGE.match(iterable)
    if bounds is None:
        raise ProgramError(
            f"cannot bound the loop over {iterable!r}: loop over a range [a:b] or a set {{...}}",
            "qasm_loops",
        )
    start, stop = _integer(bounds.group(1), consts), _integer(bounds.group(2), consts)
    step = 1
    if bounds.group(3) is not None:  # [start:step:stop]
        step, stop = stop, _integer(bounds.group(3), consts)
    if start is None or stop is None or not step:
        raise ProgramError(
            f"cannot bound the loop over {iterable!r}: its bounds must be constant integers",
            "qasm_loops",
        )
    return max(0, (stop - start) // step + 1)


def _unrolled(frames: list[_Frame]) -> int:
    """The operations counted so far, each open loop multiplying what it holds; an open
    definition costs nothing until it is called."""
    total = 0
    for frame in reversed(frames):
        total = 0 if frame.defines is not None else frame.repeat * (frame.cost + total)
    return total


def _after_literal(text: str, start: int) -> int:
    depth = 0
    for match in _BRACE.finditer(text, start):
        depth += 1 if match.group() == "{" else -1
        if depth == 0:
            return match.end()
    return len(text)


def _integer(expression: str, consts: dict[str, int]) -> int | None:
    """The value of a constant integer expression (literals, consts, + - * /), or None."""
    if len(expression) > 200:
        return None
    try:
        tree = ast.parse(_DIGIT_SEPARATOR.sub("", expression.strip()), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return None
    return _evaluate(tree, consts)


def _evaluate(node: ast.expr, consts: dict[str, int]) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _evaluate(node.operand, consts)
        return None if value is None else -value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left, consts), _evaluate(node.right, consts)
        if left is None or right is None or (right == 0 and type(node.op) is not ast.Mult):
            return None
        return _OPERATORS[type(node.op)](left, right)
    return None


def check_pulser(body: str, device_name: str, max_atoms: int | None) -> None:
    """Refuse a Pulser abstract representation with too many operations or atoms before
    Pulser's schema validation and deserialisation (milliseconds an operation) run."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise ProgramError(
            f"body is not a valid Pulser abstract representation: {err}", "body"
        ) from None
    if not isinstance(data, dict):
        raise ProgramError("body is not a valid Pulser abstract representation", "body")
    operations = data.get("operations")
    count = len(operations) if isinstance(operations, list) else 0
    if count > PULSER_MAX_OPERATIONS:
        raise ProgramError(
            f"the sequence has {count} operations; the limit is {PULSER_MAX_OPERATIONS}",
            "pulser_operations",
        )
    register = data.get("register")
    atoms = len(register) if isinstance(register, list) else 0
    if max_atoms is not None and atoms > max_atoms:
        raise DeviceRuleViolation(
            "max_atom_num", f"register has {atoms} atoms; {device_name} allows {max_atoms}"
        )


def with_declared_variables(program: Program) -> Program:
    """``program`` with every variable its Pulser sequence declares bound: a value the job
    gives, else the one the abstract representation carries (Pulser writes the defaults of
    ``to_abstract_repr(**defaults)`` there, zeros without them), as Warden and the QPU build
    it. A variable the sequence does not declare is refused (rule ``variables``). Other
    formats declare none: they are returned as they are."""
    if program.format != "pulser":
        return program
    try:
        data = json.loads(program.body)
    except json.JSONDecodeError as err:
        raise ProgramError(
            f"body is not a valid Pulser abstract representation: {err}", "body"
        ) from None
    declared = data.get("variables") if isinstance(data, dict) else None
    declared = declared if isinstance(declared, dict) else {}
    unknown = sorted(set(program.variables) - set(declared))
    if unknown:
        names = ", ".join(sorted(declared)) or "none"
        raise ProgramError(
            f"the sequence declares no variable {', '.join(map(repr, unknown))} "
            f"(it declares {names})",
            "variables",
        )
    defaults = {
        name: spec["value"]
        for name, spec in declared.items()
        if name not in program.variables and isinstance(spec, dict) and "value" in spec
    }
    if not defaults:
        return program
    return dataclasses.replace(program, variables={**defaults, **program.variables})
