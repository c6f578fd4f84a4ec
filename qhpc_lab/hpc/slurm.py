"""Slurm Prolog, Epilog and TaskProlog hooks: a job's ``qpu`` share becomes a scheduler session.

The Slurm side of the allocation layer in ``qhpc_lab.hpc.hooks``.
Prolog (root, on the node; at allocation with ``PrologFlags=Alloc``, so salloc works too): read
the job's ``qpu`` licence/GRES count and time limit from ``squeue -j JOB -O`` with only fields
Slurm writes and validates (never the text of ``scontrol show job``, where a job name can hold
``Licenses=qpu:64``) and its account from ``SLURM_JOB_ACCOUNT``, open a session on the
second-level scheduler for the job's user with a root MUNGE credential, and leave
``{run_dir}/job-{id}.json`` (0600, owned by the user) for the TaskProlog plus a root-only copy
under ``{run_dir}/private`` for the Epilog (a user can rewrite a file they own, so the Epilog
must not trust theirs).
TaskProlog (as the user, before each task): print ``export`` lines for the QRMI variables,
exactly as QRMI's SPANK plugin would, so the kernel finds the QPU either way.
Epilog (root, at job end or scancel): revoke the session (the scheduler cancels its queued jobs
with the reason "Slurm job ended") and remove both files.

Several QPUs (``[[qpus]]`` in the settings, HookConfig.qpu_configs): each hook does the above
for every QPU whose licence the job holds, and the TaskProlog exports them all in one run.

A hook never fails a job or drains a node: each error is one log line, the exit status is 0,
requests have short timeouts and the whole hook a hard deadline. A job whose Prolog could not
reach the scheduler still runs; its TaskProlog says why, and the client uses the emulator.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import model_validator

from qhpc_lab.batch import slurm_duration_s
from qhpc_lab.hpc import hooks
from qhpc_lab.hpc.hooks import (
    HOOK_ENVIRONMENT,
    QRMI_LIST_VARIABLES,
    HookError,
    HookSettings,
    JobRecord,
    close_session,
    log,
    open_session,
    qpus_environment,
    read_record,
    run_guarded,
    write_record,
)
from qhpc_lab.wire import qrmi

__all__ = [
    "HOOKS",
    "REVOKE_REASON",
    "HookConfig",
    "HookError",
    "JobRecord",
    "SlurmJob",
    "configuration",
    "epilog",
    "job_details",
    "prolog",
    "qpu_slots",
    "run_hook",
    "task_lines",
    "task_prolog",
    "time_limit_s",
    "user_file",
    "write_hook_scripts",
]

REVOKE_REASON = "Slurm job ended"
HOOKS = {"prolog": "Prolog", "epilog": "Epilog", "task-prolog": "TaskProlog"}
"""``qhpc slurm`` sub-command → the slurm.conf parameter that runs it."""
PROLOG_EPILOG_TIMEOUT_S = 60
"""slurm.conf's PrologEpilogTimeout: Slurm's last net, above the hooks' deadline_s (20 s)."""
SLURM_FACTS = (
    "SLURM_JOB_ID",
    "SLURM_JOB_UID",
    "SLURM_JOB_GID",
    "SLURM_JOB_ACCOUNT",
    "SLURM_CONF",
)
"""What the Prolog and Epilog keep of their environment: values slurmd sets itself."""
SQUEUE_FIELDS = ("JobID", "UserID", "Licenses", "tres-per-node", "tres-per-job", "TimeLimit")
"""What the Prolog asks squeue: fields Slurm writes and validates, none a user writes."""
LIST_VARIABLES = (*QRMI_LIST_VARIABLES, *qrmi.SLURM_LIST_VARIABLES)
"""QRMI's lists and the aliases QRMI's SPANK plugin exports too."""


class HookConfig(HookSettings):
    """Slurm hook settings (keys of HookSettings, plus ``licence``, ``squeue`` and ``qpus``) in
    a root-owned file (``[slurm]`` table or top-level keys), which the wrapper scripts pass
    with ``--config``."""

    SECTION: ClassVar[str] = "slurm"
    DEFAULT_CONFIG: ClassVar[str] = "/etc/qhpc/slurm.toml"
    QPU_KEYS: ClassVar[frozenset[str]] = frozenset({"resource", "licence", "scheduler_url"})
    """What a ``[[qpus]]`` entry sets; the other settings are shared by all QPUs."""
    TABLES: ClassVar[Mapping[str, frozenset[str]]] = {"qpus": QPU_KEYS}

    log_file: str = "/var/log/qhpc/slurm-hooks.log"
    licence: str = "qpu"
    """Slurm licence and/or GRES name whose count is the job's QPU slots."""
    squeue: str = "/usr/bin/squeue"
    """squeue by its absolute path: the Prolog reads the job's licences from it."""
    qpus: tuple[dict[str, str], ...] = ()
    """Several QPUs (``[[qpus]]`` tables of ``QPU_KEYS``), each with its own
    licence, scheduler and resource name; they replace the top-level three. Empty: one QPU."""

    @model_validator(mode="after")
    def _one_per_qpu(self) -> HookConfig:
        for entry in self.qpus:
            if not isinstance(entry, dict) or not set(entry) <= self.QPU_KEYS:
                raise ValueError(
                    f"each of qpus must be a [[qpus]] table of {', '.join(sorted(self.QPU_KEYS))}"
                    f", not {entry!r}"
                )
        names = [entry.get("resource") for entry in self.qpus]
        licences = [entry.get("licence") for entry in self.qpus]
        if None in names or None in licences or len({*names}) < len(names):
            raise ValueError("each of qpus needs its own resource and licence")
        self.qpu_configs()  # each QPU's resource and scheduler_url are checked as one's
        return self

    def qpu_configs(self) -> list[HookConfig]:
        """One single-QPU configuration per QPU; each keeps its records in its own folder
        ``{run_dir}/{resource}`` (one QPU: this configuration, records in ``run_dir``)."""
        if not self.qpus:
            return [self]
        return [
            self.replaced(**entry, qpus=(), run_dir=str(Path(self.run_dir) / entry["resource"]))
            for entry in self.qpus
        ]


# -- what Slurm says about the job ---------------------------------------------------------


@dataclass(frozen=True)
class SlurmJob:
    """What the Prolog needs of a job that its environment does not say."""

    job_id: str
    uid: int
    licences: str
    """Slurm's ``Licenses`` (``qpu:2``; ``(null)`` for none)."""
    tres: tuple[str, ...]
    """Slurm's ``tres-per-node`` and ``tres-per-job`` (``gres:qpu:1``; ``N/A`` for none)."""
    time_limit: str
    """Slurm's ``TimeLimit`` (``[D-]HH:MM:SS``, ``MM:SS`` or ``UNLIMITED``)."""


def job_details(job_id: str, config: HookConfig, environ: Mapping[str, str]) -> SlurmJob:
    """The job's licences, GRES and time limit from ``squeue -j JOB -O`` (the Prolog's
    environment names none of them), asking only for fields that Slurm writes and checks:
    numbers, licence and GRES names it validated against slurm.conf, its own time format. No
    field a user writes (name, comment, account, paths) is asked for, so a name holding
    ``Licenses=qpu:64``, a ``|`` or a newline never reaches the parser. (``squeue --json`` would
    do as well, but Slurm 22.05 lists every job of the cluster there, whatever ``--jobs`` says:
    2 s and a 460 MB squeue at 5 000 queued jobs, against a constant cost here.)
    ``environ``: the facts Slurm gave the hook (SLURM_CONF)."""
    env = {**HOOK_ENVIRONMENT, **{k: environ[k] for k in ("SLURM_CONF",) if k in environ}}
    fields = ",".join(f"{name}:|" for name in SQUEUE_FIELDS)
    try:
        done = subprocess.run(
            [config.squeue, "--noheader", "--jobs", job_id, "--Format", fields],
            capture_output=True,
            text=True,
            timeout=config.timeout_s,
            env=env,
        )
    except FileNotFoundError:
        raise HookError(
            f"{config.squeue} not found: install slurm-client on the compute nodes, or set "
            "squeue to its absolute path"
        ) from None
    except subprocess.TimeoutExpired:
        raise HookError(f"squeue -j {job_id} took more than {config.timeout_s:g} s") from None
    if done.returncode:
        raise HookError(f"squeue -j {job_id} failed: {done.stderr.strip()}")
    values = done.stdout.rstrip("\n").split("|")
    if "\n" in done.stdout.rstrip("\n") or len(values) != len(SQUEUE_FIELDS) + 1 or values[-1]:
        raise HookError(f"squeue -j {job_id} answered {done.stdout[:200]!r}, not one job")
    listed, uid, licences, per_node, per_job, limit = values[:-1]
    if listed != job_id or not uid.isdigit():
        raise HookError(f"squeue -j {job_id} answered for job {listed!r}, uid {uid!r}")
    return SlurmJob(job_id, int(uid), licences, (per_node, per_job), limit)


def qpu_slots(job: SlurmJob, licence: str) -> int:
    """The job's QPU share: its ``licence`` licence count or its GRES count, whichever is larger.

    Licences read ``qpu:2`` (``qpu*2`` in newer Slurm, ``qpu@server:2`` when remote); GRES
    ``gres:qpu:2``, ``gres/qpu:2`` or ``gres:qpu:type:2``; no count means 1.
    """
    slots = 0
    items = [(False, item) for item in job.licences.split(",")]
    items += [(True, item) for tres in job.tres for item in tres.split(",")]
    for gres, item in items:
        if gres:
            if not item.startswith(("gres:", "gres/")):
                continue
            item = item[5:]
        parts = re.split(r"[:*=]", item)
        if parts[0].split("@")[0] != licence:
            continue
        count = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        slots = max(slots, count)
    return slots


def time_limit_s(job: SlurmJob) -> int | None:
    """The job's time limit in seconds (``[D-]HH:MM:SS``); None when UNLIMITED or unknown."""
    return slurm_duration_s(job.time_limit)


def job_owner(job: SlurmJob, uid: int) -> None:
    """HookError unless Slurm's record of the job names the uid Slurm gave the hook."""
    if job.uid != uid:
        raise HookError(f"squeue names uid {job.uid} for job {job.job_id}, Slurm's hook {uid}")


# -- the hooks -------------------------------------------------------------------------------


def user_file(config: HookConfig, job_id: str) -> Path:
    """The copy of the record the TaskProlog reads as the job's user."""
    return Path(config.run_dir) / f"job-{job_id}.json"


def _job(environ: Mapping[str, str]) -> tuple[str, int, int]:
    job_id = environ.get("SLURM_JOB_ID", "")
    if not job_id.isdigit():
        raise HookError("SLURM_JOB_ID is missing: this hook runs under Slurm only")
    try:
        return job_id, int(environ["SLURM_JOB_UID"]), int(environ.get("SLURM_JOB_GID", "-1"))
    except (KeyError, ValueError):
        raise HookError("SLURM_JOB_UID is missing or not a number") from None


def prolog(config: HookConfig, environ: Mapping[str, str]) -> list[JobRecord]:
    """Open a session on each QPU whose licence or GRES the job holds; the records written.
    ``environ``: the facts Slurm gave the hook (run_hook keeps no other)."""
    job_id, uid, gid = _job(environ)
    job = job_details(job_id, config, environ)
    job_owner(job, uid)
    account = environ.get("SLURM_JOB_ACCOUNT") or None  # as slurmd sets it, never parsed
    limit = time_limit_s(job)
    records = []
    for qpu in config.qpu_configs():
        slots = qpu_slots(job, qpu.licence)
        if not slots:
            log.info("uid %d holds no %s licence or GRES: no QPU session", uid, qpu.licence)
            continue
        record = open_session(qpu, job_id, uid, slots, limit, REVOKE_REASON, account)
        write_record(user_file(qpu, job_id), record, uid, gid)
        records.append(record)
    return records


def epilog(config: HookConfig, environ: Mapping[str, str]) -> None:
    """Revoke the job's session on each QPU (its queued jobs are cancelled), remove its files."""
    job_id, _, _ = _job(environ)
    for qpu in config.qpu_configs():
        user_file(qpu, job_id).unlink(missing_ok=True)
        close_session(qpu, job_id, REVOKE_REASON)


def task_lines(
    config: HookConfig,
    environ: Mapping[str, str],
    records: JobRecord | Sequence[JobRecord | None] | None,
) -> list[str]:
    """The TaskProlog's output: ``export``, ``unset`` and ``print`` lines for Slurm.
    ``records``: one per QPU of ``config.qpu_configs()`` (None where the job holds none)."""
    if records is None or isinstance(records, JobRecord):
        records = [records]
    change = qpus_environment(
        list(zip(config.qpu_configs(), records, strict=True)),
        environ,
        environ.get("SLURM_JOB_ID", ""),
        LIST_VARIABLES,
        environ.get("SLURM_JOB_UID", ""),
    )
    lines = [f"export {var}={value}" for var, value in change.set.items()]
    lines += [f"unset {var}" for var in change.unset]
    if change.notice:
        lines += [f"print {notice}" for notice in change.notice.splitlines()]
    return lines


def task_prolog(config: HookConfig, environ: Mapping[str, str]) -> list[str]:
    """Runs as the job's user: read their session files and answer Slurm's TaskProlog protocol."""
    job_id = environ.get("SLURM_JOB_ID", "")
    records = [
        read_record(user_file(qpu, job_id)) if job_id.isdigit() else None
        for qpu in config.qpu_configs()
    ]
    return task_lines(config, environ, records)


# -- entry points --------------------------------------------------------------------------


def run_hook(hook: str, config_path: str | None) -> int:
    """``qhpc slurm <hook>``. Always 0: a failing Prolog would drain the node and hold the job.

    The Prolog and Epilog run as root: they keep only :data:`SLURM_FACTS` of their environment
    (which Slurm sets itself; a job's own variables reach a Prolog only as ``SPANK_*``). The
    TaskProlog runs as the job's user, in the job's environment, and changes only that.
    """
    if hook == "task-prolog":
        try:
            lines = task_prolog(HookConfig.load(config_path), os.environ)
        except Exception as err:  # the task must start whatever happened here
            lines = [f"print qhpc: the QPU task prolog failed ({err}); the emulator is used"]
        print("\n".join(lines), flush=True)
        return 0
    environ = hooks.isolate({k: os.environ[k] for k in SLURM_FACTS if k in os.environ})
    step = prolog if hook == "prolog" else epilog
    job_id = environ.get("SLURM_JOB_ID", "")
    return run_guarded(HookConfig, hook, job_id, config_path, lambda c: step(c, environ))


def write_hook_scripts(directory: Path, python: str, config: str) -> dict[str, Path]:
    """The Prolog, Epilog and TaskProlog wrapper scripts slurm.conf names; ``python`` must be
    runnable by every job user (the TaskProlog runs as them), else PermissionError."""
    labels = {hook: f"Slurm {parameter}" for hook, parameter in HOOKS.items()}
    return hooks.write_hook_scripts(directory, python, config, "slurm", labels)


def configuration(scripts: Mapping[str, Path]) -> str:
    """The slurm.conf lines for the hooks: the session opens at allocation (salloc too), and
    Slurm's own limit on a Prolog/Epilog run stays above the hooks' ``deadline_s``."""
    lines = [f"{HOOKS[hook]}={path}" for hook, path in scripts.items()]
    lines += ["PrologFlags=Alloc", f"PrologEpilogTimeout={PROLOG_EPILOG_TIMEOUT_S}"]
    return "\n".join(lines)
