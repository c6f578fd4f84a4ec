"""The batch seam's parts that need no cluster: the job script, what a forgotten job left
behind, Grid Engine's accounting record, Slurm's wait status, the ledger. The commands
themselves run against the real dev clusters in test_cluster_emulator and test_notebook_runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qhpc_lab.batch import (
    BatchEntry,
    BatchError,
    BatchLedger,
    BatchRequest,
    BatchState,
    batch_system,
    slurm_duration_s,
)
from qhpc_lab.batch._gridengine import _ended
from qhpc_lab.batch._script import job_script, left_behind, note_cancelled
from qhpc_lab.batch._slurm import _exit_code


def _request(tmp_path: Path, **changes: object) -> BatchRequest:
    values: dict = {
        "command": ("bash", "-c", 'echo "$GREETING"; exit 3'),
        "name": "t",
        "workdir": tmp_path,
        "output": tmp_path / "out.txt",
        "environment": {"GREETING": "it's $HOME; `id`"},
    }
    return BatchRequest(**(values | changes))


def test_the_job_script_quotes_values_and_leaves_its_exit_status(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(job_script(_request(tmp_path)))
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 3
    assert done.stdout == "it's $HOME; `id`\n"
    job = left_behind("slurm", "7", tmp_path)
    assert (job.state, job.exit_code) == (BatchState.FAILED, 3)


def test_a_variable_name_that_is_not_a_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="cannot be an environment variable"):
        job_script(_request(tmp_path, environment={"A; rm -rf ~": "x"}))


def test_a_forgotten_job_reads_from_its_folder(tmp_path: Path) -> None:
    job = left_behind("gridengine", "9", tmp_path)
    assert job.state == BatchState.FAILED and "left no exit status" in (job.reason or "")
    note_cancelled(tmp_path)
    assert left_behind("gridengine", "9", tmp_path).state == BatchState.CANCELLED
    with pytest.raises(BatchError, match="knows no job 9"):
        left_behind("gridengine", "9", None)


ACCOUNTING = """\
==============================================================
qname        qpu.q
hostname     node7
owner        alice
jobname      emulate
jobnumber    3
qsub_time    Mon Dec  7 17:43:03 2026
start_time   Mon Dec  7 17:43:04 2026
end_time     Mon Dec  7 17:43:09 2026
failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit
exit_status  137                  (Killed)
category     -l h_rt=60,qpu=1
"""


def test_grid_engine_accounting_names_the_limit() -> None:
    job = _ended("3", ACCOUNTING)
    assert (job.state, job.node, job.exit_code) == (BatchState.FAILED, "node7", 137)
    assert job.limit == "time limit 60 s"
    assert job.finished_at is not None and job.started_at is not None
    done = _ended("4", ACCOUNTING.replace("37  : qmaster enforced", "0").replace("137", "0"))
    assert (done.state, done.limit, done.reason) == (BatchState.COMPLETED, None, None)


@pytest.mark.parametrize(("status", "code"), [("0:0", 0), ("768:0", 3), ("15:0", 143), ("", None)])
def test_slurm_wait_status(status: str, code: int | None) -> None:
    assert _exit_code(status) == code


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1:00", 60), ("2-00:00:10", 172810), ("UNLIMITED", None), ("30", 30), ("x:1", None)],
)
def test_slurm_durations(text: str, seconds: int | None) -> None:
    assert slurm_duration_s(text) == seconds


def test_ids_are_numbers_before_any_command_runs() -> None:
    for name in ("slurm", "gridengine"):
        with pytest.raises(BatchError, match="is not a"):
            batch_system(name, {"PATH": "/nonexistent"}).job("1; scancel -u alice")


def test_no_batch_system_in_reach_says_what_was_looked_for() -> None:
    with pytest.raises(BatchError, match="neither sbatch nor qsub"):
        batch_system(None, {"PATH": "/nonexistent"})
    with pytest.raises(BatchError, match="unknown batch system 'pbs'"):
        batch_system("pbs", {})


def test_the_ledger_keeps_entries_newest_first_and_skips_the_unreadable(tmp_path: Path) -> None:
    ledger = BatchLedger.default({"HOME": str(tmp_path)})
    assert ledger.entries() == []
    folders = [ledger.new_folder("emulation"), ledger.new_folder("notebook")]
    entries = [
        ledger.add(
            BatchEntry(
                id=folder.name,
                kind=kind,
                title=kind,
                system="slurm",
                job_id=str(i),
                submitted_at=f"2026-12-07T10:0{i}:00Z",
                folder=folder,
            )
        )
        for i, (folder, kind) in enumerate(zip(folders, ("emulation", "notebook"), strict=True))
    ]
    (ledger.new_folder("emulation") / "entry.json").write_text("{not json")
    assert [e.job_id for e in ledger.entries()] == ["1", "0"]
    assert [e.kind for e in ledger.entries("emulation")] == ["emulation"]
    assert ledger.get(entries[0].id) == entries[0]
    assert ledger.get("../../etc") is None
    moved = ledger.update(entries[0], details={"engine": "emu-mps"})
    assert ledger.get(entries[0].id) == moved
