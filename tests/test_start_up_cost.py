"""What the worker processes leave out of their start (``qhpc_lab.programs.sdk_imports``),
and that what they answer does not change: jsonschema's IRI formats give their verdicts once
the deferred grammar is built on first use, and the validation worker checks Pulser programs
without torch loaded (its refusals are test_validation's, all checked by the same worker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qhpc_lab.programs import Program, validate_async, validation_worker_pid
from qhpc_lab.qpu import DeviceProfile
from tests.support.programs import pulser_sequence_json

IRI_CHECKS = """\
import json, sys
from qhpc_lab.programs.sdk_imports import defer_iri_grammar

defer_iri_grammar()
import jsonschema

built_at_import = "rfc3987_syntax.syntax_helpers" in sys.modules
checker = jsonschema.Draft7Validator.FORMAT_CHECKER
values = [("http://example.org/ä", "iri"), ("http://exa mple.org", "iri"),
          ("../ä?q=1", "iri-reference"), ("a b", "iri-reference")]
verdicts = [checker.conforms(value, rule) for value, rule in values]
from rfc3987_syntax import *  # the package's names, as its __init__ exports them
print(json.dumps({"built_at_import": built_at_import, "verdicts": verdicts,
                  "names": "is_valid_syntax_iri" in dir()}))
"""


def test_a_deferred_iri_grammar_is_built_at_the_first_iri_check() -> None:
    """Before: importing jsonschema built the grammar (1–2 s of CPU). After: not at import;
    jsonschema's verdicts (a valid IRI and reference pass, a space fails) and the package's
    names are as without the deferral."""
    done = subprocess.run(
        [sys.executable, "-c", IRI_CHECKS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "built_at_import": False,
        "verdicts": [True, False, True, False],
        "names": True,
    }


@pytest.mark.anyio
async def test_the_validation_worker_checks_pulser_programs_without_torch() -> None:
    """A program no other test sends (the worker, not the cache, answers it); torch's shared
    library is not mapped in the worker that did."""
    spec = DeviceProfile.load("test").spec
    program = Program("pulser", pulser_sequence_json(atoms=3, duration=232), 10)
    assert (await validate_async(program, spec)).num_qubits == 3
    maps = Path(f"/proc/{validation_worker_pid()}/maps").read_text()
    assert "libtorch" not in maps
