"""Notebooks for the notebook-run tests: a parameters cell, a ``%%qpu`` cell, a failing cell."""

from __future__ import annotations

from pathlib import Path

import nbformat

SEQUENCE = """\
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice

register = Register.from_coordinates([(-3.0, 0.0), (3.0, 0.0)], prefix="q")
sequence = Sequence(register, AnalogDevice)
sequence.declare_channel("g", "rydberg_global")
sequence.add(Pulse.ConstantPulse(200, omega, 0.0, 0.0), "g")
sequence.measure("ground-rydberg")"""


FAILING_CELL = 5
"""The cell ``write_notebook(..., fail=True)`` fails in, counted from 1 (markdown included)."""


def write_notebook(path: Path, kernel: str = "python3-qpu", fail: bool = False) -> Path:
    """A notebook: a markdown title, a parameters cell (``omega = 2.0``, the pulse's
    amplitude, and ``label = 'dev'``), the sequence, a ``%%qpu`` cell, with ``fail`` a
    division by zero, and a cell printing what ran."""
    cells = [
        nbformat.v4.new_markdown_cell("# A production run"),
        nbformat.v4.new_code_cell("omega = 2.0\nlabel = 'dev'"),
        nbformat.v4.new_code_cell(SEQUENCE),
        nbformat.v4.new_code_cell("%%qpu --shots 20 -o result\nsequence"),
        *([nbformat.v4.new_code_cell("ratio = 1 / 0")] if fail else []),
        nbformat.v4.new_code_cell("print(label, result.shots, result.job_id)"),
    ]
    cells[1].metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nbformat.write(notebook, path)
    path.chmod(0o644)
    return path
