"""The sidebar and the kernel say the same: labextension/src/generated.ts is what
``python -m qhpc_lab.wire`` writes (the vocabulary and the relayed fields of the daemon's
documents), and the sidebar's ``duration`` (format.ts, compiled with the extension's own
TypeScript and run by Node) reads every duration as :func:`qhpc_lab.vocabulary.format_duration`
does."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from qhpc_lab.vocabulary import HOURS_FROM_S, MINUTES_FROM_S, format_duration
from qhpc_lab.wire.typescript import typescript_module

LABEXTENSION = Path(__file__).resolve().parent.parent / "labextension"
TSC = LABEXTENSION / "node_modules" / "typescript" / "bin" / "tsc"
EDGES = (MINUTES_FROM_S, HOURS_FROM_S, 60, 90, 150, 5400)
DURATIONS = sorted(
    {
        -5.0, 0.0, 0.4, 0.5, 1.5, 2.5, 41.6, 59.5, 3600.0, 8999.9, 9000.0, 86400 * 3 + 17.3,
        *(edge + delta for edge in EDGES for delta in (-30.0, -0.5, -0.01, 0.0, 0.01, 29.99, 30)),
    }
)  # fmt: skip
"""Each threshold and the half-way points where rounding turns, from either side."""


def test_generated_typescript_is_current() -> None:
    generated = (LABEXTENSION / "src" / "generated.ts").read_text()
    assert generated == typescript_module(), (
        "labextension/src/generated.ts is stale: "
        "python -m qhpc_lab.wire > labextension/src/generated.ts"
    )


def test_the_sidebar_reads_durations_as_the_kernel_does(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not TSC.is_file():
        pytest.fail(f"needs node and {TSC} (make labextension)", pytrace=False)
    subprocess.run(
        [node, str(TSC), "--outDir", str(tmp_path), "--module", "es2022", "--target", "es2022",
         "--moduleResolution", "node", "--strict", str(LABEXTENSION / "src" / "format.ts")],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    (tmp_path / "package.json").write_text('{"type": "module"}')
    script = (
        "import { duration } from './format.js';"
        f"console.log(JSON.stringify({json.dumps(DURATIONS)}.map(duration)));"
    )
    (tmp_path / "run.js").write_text(script)
    shown = subprocess.run(
        [node, str(tmp_path / "run.js")], check=True, capture_output=True, text=True, timeout=60
    )
    sidebar = dict(zip(DURATIONS, json.loads(shown.stdout), strict=True))
    kernel = {seconds: format_duration(seconds) for seconds in DURATIONS}
    assert sidebar == kernel
    assert [format_duration(s) for s in (119.4, 120, 7199, 7200)] == [
        "119 s", "2 min", "120 min", "2.0 h"
    ]  # fmt: skip
