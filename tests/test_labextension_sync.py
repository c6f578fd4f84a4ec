"""The sidebar and the kernel say the same: labextension/src/generated.ts is what
``python -m qhpc_lab.wire`` writes (the vocabulary and the relayed fields of the daemon's
documents), and the sidebar's ``duration``, ``position``, ``setsDone`` and ``expectedTimes``
(format.ts, compiled with the extension's own TypeScript and run by Node) read every duration
as :func:`qhpc_lab.vocabulary.format_duration` does, every place in the queue as
:func:`~qhpc_lab.vocabulary.format_position`, a sweep's progress as
:func:`~qhpc_lab.vocabulary.format_sets_done` and a job's start and end estimates as the
client's :func:`~qhpc_lab.client.expected_times`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from qhpc_lab.client import JobState, expected_times
from qhpc_lab.vocabulary import (
    HOURS_FROM_S,
    MINUTES_FROM_S,
    format_duration,
    format_position,
    format_sets_done,
)
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
PLACES = [[0, None], [0, 3], [1, None], [2, 3], [3, 2], [11, 40], [12, 12], [22, 30], [101, 200]]
"""(position, waiting): running, known and unknown totals, a stale total, the English suffixes."""
SWEEPS = [[0, 3], [120, 1000], [999, 1000], [12345, 100000], [7, 10000]]
"""(sets done, sets): a sweep's progress, below and above the thousands."""
JOBS = [
    {"status": "PENDING", "position": 2, "eta_s": 100.0, "shots": 500, "shots_done": 0},
    {"status": "PENDING", "position": 1, "eta_s": 100.0, "shots": 500, "shots_done": 200},
    {"status": "PENDING", "position": 1, "eta_s": 10.0, "shots": 500, "shots_done": 0},
    {"status": "PENDING", "position": 3, "eta_s": None, "shots": 500, "shots_done": 0},
    {"status": "RUNNING", "position": 0, "eta_s": 42.0, "shots": 500, "shots_done": 100},
    {"status": "DONE", "position": None, "eta_s": None, "shots": 500, "shots_done": 500},
]
"""Waiting (started or not, held), running and ended jobs as the job document has them."""
TIME_PER_SHOT_S = [0.1, None]


def test_generated_typescript_is_current() -> None:
    generated = (LABEXTENSION / "src" / "generated.ts").read_text()
    assert generated == typescript_module(), (
        "labextension/src/generated.ts is stale: "
        "python -m qhpc_lab.wire > labextension/src/generated.ts"
    )


def test_the_sidebar_reads_durations_places_and_estimates_as_the_kernel_does(
    tmp_path: Path,
) -> None:
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
        "import { duration, expectedTimes, position, setsDone } from './format.js';"
        f"console.log(JSON.stringify({json.dumps(DURATIONS)}.map(duration)));"
        f"console.log(JSON.stringify({json.dumps(PLACES)}.map(([p, w]) => position(p, w))));"
        f"console.log(JSON.stringify({json.dumps(SWEEPS)}.map(([d, t]) => setsDone(d, t))));"
        f"console.log(JSON.stringify({json.dumps(TIME_PER_SHOT_S)}.map(t => "
        f"{json.dumps(JOBS)}.map(job => expectedTimes(job, t, 5)))));"
    )
    (tmp_path / "run.js").write_text(script)
    shown = subprocess.run(
        [node, str(tmp_path / "run.js")], check=True, capture_output=True, text=True, timeout=60
    )
    durations, places, sweeps, times = (json.loads(line) for line in shown.stdout.splitlines())
    sidebar = dict(zip(DURATIONS, durations, strict=True))
    kernel = {seconds: format_duration(seconds) for seconds in DURATIONS}
    assert sidebar == kernel
    assert places == [format_position(p, w) for p, w in PLACES]
    assert sweeps == [format_sets_done(d, t) for d, t in SWEEPS]
    assert sweeps[1] == "sets 120 of 1 000 done"
    assert places[:5] == ["running", "running", "1st waiting", "2nd of 3 waiting", "3rd waiting"]
    states = [
        [JobState("1", **job, time_per_shot_s=tps) for job in jobs_as_states()]
        for tps in TIME_PER_SHOT_S
    ]
    assert times == [[expected_times(state, 5) for state in row] for row in states]
    assert times[0][:2] == [
        ["starts in ~45 s", "ends in ~95 s"],
        ["starts in ~65 s", "ends in ~95 s"],
    ]
    assert [format_duration(s) for s in (119.4, 120, 7199, 7200)] == [
        "119 s", "2 min", "120 min", "2.0 h"
    ]  # fmt: skip


def jobs_as_states() -> list[dict[str, object]]:
    """:data:`JOBS` with the client's name for the wire's ``eta_s``."""
    return [
        {**{k: v for k, v in job.items() if k != "eta_s"}, "end_in_s": job["eta_s"]} for job in JOBS
    ]
