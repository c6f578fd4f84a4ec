"""The ``%%qpu`` magics in an IPython shell, as a notebook's kernel runs cells."""

from __future__ import annotations

import re

import pytest
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell

from qhpc_lab.client import Client
from qhpc_lab.jupyter.magics import QPUMagics

SEQUENCE_CELL = """
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice

sequence = Sequence(Register.from_coordinates([(0, 0), (6, 0)], prefix="q"), AnalogDevice)
sequence.declare_channel("g", "rydberg_global")
sequence.add(Pulse.ConstantPulse(100, 2.0, 0.0, 0.0), "g")
sequence
"""
"""A notebook cell that builds a two-atom Pulser sequence named ``sequence``."""


def run(shell: InteractiveShell, capsys: pytest.CaptureFixture[str], cell: str) -> tuple[bool, str]:
    """Run ``cell`` as a notebook cell: did it succeed, and what it showed (colours removed)."""
    result: ExecutionResult = shell.run_cell(cell)
    captured = capsys.readouterr()
    return result.success, re.sub(r"\x1b\[[0-9;]*m", "", captured.out + captured.err)


def magics_on(shell: InteractiveShell, client: Client) -> Client:
    """Register the ``%%qpu`` magics on ``shell``, submitting through ``client``."""
    shell.register_magics(QPUMagics(shell, client))
    return client
