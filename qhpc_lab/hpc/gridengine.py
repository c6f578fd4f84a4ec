"""Grid Engine queue prolog and epilog, and a load sensor: the Grid Engine side of the hooks.

Grid Engine (SGE 8.1, Open Cluster Scheduler) sees the QPU as a consumable complex ``qpu`` (INT,
consumable per JOB, its capacity the number of QPU slots on the global host): ``qsub -l qpu=2``
asks for two slots. The allocation itself is ``qhpc_lab.hpc.hooks``, shared with Slurm.

Prolog (``root@`` in the queue's ``prolog``): find the job from the ``sge_shepherd`` that started
it (its spool directory and ``config``, never the job's environment, which holds the user's
``qsub -v`` variables), read its ``qpu`` request and ``h_rt`` from ``qstat -j -xml`` run by
its absolute path in a fixed environment, open a session for the job's owner, and write the
QRMI variables into the job's ``environment`` file in its spool directory, which the shepherd
reads when it starts the job (Grid Engine has no TaskProlog); a job whose session could not be
opened gets a notice in its output and runs on the emulator.
Epilog (``root@``): revoke the session (the scheduler cancels its queued programs with the
reason "Grid Engine job ended") and append the job's QPU usage (programs, shots, QPU seconds)
to ``accounting_file``, keyed by the Grid Engine job id: SGE 8.1's ``qacct`` has fixed fields,
so ``qhpc gridengine usage JOB_ID`` reads it instead.
Load sensor (``load_sensor`` of an execution host): reports the QPU's readiness as
``global:qpu_ready`` (1 when accessible, not drained and not in maintenance) and its free
slots as ``global:qpu`` (``slots_total`` less the slots of every open session, so sessions
opened by other first-level schedulers count too; Grid Engine uses the lower of that and its
own booking).

A hook never fails a job: a non-zero prolog or epilog puts the queue in error, so each error is
one log line and the exit status 0.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar
from xml.etree import ElementTree

import psutil

from qhpc_lab.hpc import hooks
from qhpc_lab.hpc.hooks import (
    HOOK_ENVIRONMENT,
    HookError,
    HookSettings,
    JobRecord,
    check_trusted_file,
    close_session,
    deadline,
    job_environment,
    log,
    log_to,
    open_session,
    request,
    run_guarded,
)

REVOKE_REASON = "Grid Engine job ended"
HOOKS = {"prolog": "queue prolog", "epilog": "queue epilog", "load-sensor": "load_sensor"}
"""``qhpc gridengine`` sub-command → the Grid Engine setting that runs it."""
SHEPHERD = "sge_shepherd"
"""Grid Engine's per-job process, the parent of a queue prolog and epilog."""
SGE_CELL_VARIABLES = ("SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT")
READY_STATES = ("ONLINE", "CALIBRATING")
"""Device states in which the QPU takes work (calibration pauses it briefly)."""


class GridEngineConfig(HookSettings):
    """Grid Engine hook settings (keys of HookSettings, plus the ones below) in a root-owned
    file (``[gridengine]`` table or top-level keys), default /etc/qhpc/gridengine.toml."""

    SECTION: ClassVar[str] = "gridengine"
    DEFAULT_CONFIG: ClassVar[str] = "/etc/qhpc/gridengine.toml"

    log_file: str = "/var/log/qhpc/gridengine-hooks.log"
    complex: str = "qpu"
    """The consumable complex whose request is the job's QPU slots (also the load value)."""
    ready_complex: str = "qpu_ready"
    """The load sensor's readiness value (a non-consumable INT complex)."""
    slots_total: int = 0
    """The QPU's slots, as the global host's ``complex_values`` has them; 0: the load sensor
    reports readiness only."""
    accounting_file: str = "/var/lib/qhpc/gridengine-usage.jsonl"
    """Per-job QPU usage, one JSON line per ended job that held a share."""
    qstat: str = "/usr/lib/gridengine/qstat"
    """qstat by its absolute path (Debian's; the prolog runs ``qstat -j JOB -xml``)."""
    spool_owner: str = "root"
    """Who owns the execution daemon's spool (Grid Engine's ``admin_user``; root when none):
    the job's ``config`` there must be theirs or root's."""


# -- which job, and what Grid Engine says about it -------------------------------------------


@dataclass(frozen=True)
class ShepherdJob:
    """The job a prolog or epilog runs for, as the ``sge_shepherd`` that started it knows it.

    A root prolog's environment holds the job's ``qsub -v`` variables, so nothing in it is
    taken: the shepherd (root, Grid Engine's own program) runs in the job's spool directory,
    whose ``config`` the execution daemon wrote, and its environment is the daemon's.
    """

    spool_dir: Path
    job_id: str
    task_id: str
    """The array task's number; empty for a job that is not an array."""
    owner: str
    cell: dict[str, str]
    """SGE_ROOT, SGE_CELL and the ports as the execution daemon has them: what qstat needs."""

    @property
    def key(self) -> str:
        """The job id, ``JOB.TASK`` for a task of an array job (each task has its prolog)."""
        return f"{self.job_id}.{self.task_id}" if self.task_id else self.job_id


def shepherd_job(config: GridEngineConfig, pid: int | None = None) -> ShepherdJob:
    """The job of the shepherd ``pid`` (default: this process's parent, as the hook scripts
    ``exec`` Python); HookError when that is no root shepherd or its files are not trusted."""
    try:
        shepherd = psutil.Process(os.getppid() if pid is None else pid)
        exe, cwd, real_uid = shepherd.exe(), shepherd.cwd(), shepherd.uids().real
        environ = shepherd.environ()
    except psutil.Error as err:
        raise HookError(f"cannot read the process that started the hook: {err}") from None
    if Path(exe).name != SHEPHERD or real_uid != 0:
        raise HookError(
            f"the hook was not started by a root {SHEPHERD} (parent {exe}, uid {real_uid}): "
            "it runs as a Grid Engine queue prolog or epilog only"
        )
    spool = Path(cwd)
    check_trusted_file(spool / "config", config.spool_owner)
    facts = dict(
        line.split("=", 1) for line in (spool / "config").read_text().splitlines() if "=" in line
    )
    job_id, task, owner = (facts.get(k, "") for k in ("job_id", "ja_task_id", "job_owner"))
    if not job_id.isdigit() or not owner:
        raise HookError(f"{spool / 'config'} names no job_id and job_owner")
    return ShepherdJob(
        spool,
        job_id,
        task if task.isdigit() and task != "0" else "",
        owner,
        {k: environ[k] for k in SGE_CELL_VARIABLES if k in environ},
    )


@dataclass(frozen=True)
class JobRequest:
    """What ``qstat -j -xml`` says of a job: its owner and its hard resource requests."""

    uid: int
    owner: str
    requests: dict[str, float]


def job_details(job: ShepherdJob, config: GridEngineConfig) -> JobRequest:
    """``qstat -j JOB -xml`` by its absolute path (the prolog's environment names no resource
    requests): XML, so a job name or an environment value holding ``hard resource_list:`` and
    a newline is only text."""
    try:
        done = subprocess.run(
            [config.qstat, "-j", job.job_id, "-xml"],
            capture_output=True,
            text=True,
            timeout=config.timeout_s,
            env={**HOOK_ENVIRONMENT, **job.cell},
        )
    except FileNotFoundError:
        raise HookError(
            f"{config.qstat} not found: install gridengine-client on the execution hosts, or "
            "set qstat to its absolute path"
        ) from None
    except subprocess.TimeoutExpired:
        raise HookError(f"qstat -j {job.job_id} took more than {config.timeout_s:g} s") from None
    if done.returncode:
        raise HookError(f"qstat -j {job.job_id} failed: {(done.stderr or done.stdout).strip()}")
    return parse_qstat_xml(done.stdout, job.job_id)


def parse_qstat_xml(text: str, job_id: str) -> JobRequest:
    """The :class:`JobRequest` of ``job_id`` in ``qstat -j -xml`` output."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as err:
        raise HookError(f"qstat -j -xml answered no XML: {err}") from None
    info = next((e for e in root.iter() if e.findtext("JB_job_number") == job_id), None)
    uid = info.findtext("JB_uid") if info is not None else None
    if info is None or uid is None or not uid.isdigit():
        raise HookError(f"qstat -j {job_id} -xml names no job {job_id} with a uid")
    requests = {}
    for item in info.iterfind("JB_hard_resource_list/qstat_l_requests"):
        try:
            requests[item.findtext("CE_name", "")] = float(item.findtext("CE_doubleval", ""))
        except ValueError:
            continue
    return JobRequest(int(uid), info.findtext("JB_owner", ""), requests)


def qpu_slots(job: JobRequest, complex_name: str) -> int:
    """The job's request of ``complex_name`` (a count)."""
    return max(0, int(job.requests.get(complex_name, 0)))


def time_limit_s(job: JobRequest) -> int | None:
    """The job's ``h_rt`` (else ``s_rt``) in seconds; None if none."""
    seconds = job.requests.get("h_rt") or job.requests.get("s_rt")
    return int(seconds) if seconds else None


# -- the job's environment file ------------------------------------------------------------------


def read_environment(path: Path) -> dict[str, str]:
    """The job's starting environment as the shepherd will set it (``NAME=value`` lines)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return dict(pairs)


def update_environment(path: Path, variables: dict[str, str], unset: list[str]) -> None:
    """Rewrite the environment file with ``variables`` set and ``unset`` gone; mode 0600 (it
    carries the session token), atomically."""
    drop = {*variables, *unset}
    lines = [line for line in path.read_text().splitlines() if line.split("=", 1)[0] not in drop]
    lines += [f"{name}={value}" for name, value in variables.items()]
    partial = path.with_name(path.name + ".qhpc")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(partial, path)


# -- the hooks -----------------------------------------------------------------------------------


def prolog(config: GridEngineConfig, job: ShepherdJob) -> JobRecord | None:
    """Open the job's session if it asked for QPU slots and write its QRMI variables into the
    job's environment; the record, or None."""
    details = job_details(job, config)
    if details.owner != job.owner:
        raise HookError(
            f"qstat names {details.owner!r} as the job's owner, its spool {job.owner!r}"
        )
    uid, slots = details.uid, qpu_slots(details, config.complex)
    record = None
    if slots:
        record = open_session(config, job.key, uid, slots, time_limit_s(details), REVOKE_REASON)
    else:
        log.info("uid %d asked for no %s: no QPU session", uid, config.complex)
    path = job.spool_dir / "environment"
    change = job_environment(config, read_environment(path), record, job.key, uid=str(uid))
    if change.set or change.unset:
        update_environment(path, change.set, change.unset)
    if change.notice:
        print(change.notice, flush=True)  # the prolog's output is the job's
    return record


def epilog(config: GridEngineConfig, job: ShepherdJob) -> dict[str, Any] | None:
    """Revoke the job's session and record its QPU usage; the usage line, or None."""
    key = job.key
    record = close_session(config, key, REVOKE_REASON)
    if record is None or not record.session:
        return None
    usage = {
        "job_id": key,
        "uid": record.uid,
        "session": record.session,
        "qpu_slots": record.slots,
        "ended_at": round(time.time(), 3),
        **_usage(config, key),
    }
    path = Path(config.accounting_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(usage) + "\n")
    log.info("QPU usage: %s", usage)
    return usage


def _usage(config: GridEngineConfig, key: str) -> dict[str, Any]:
    """Programs, shots and QPU seconds of the job, from the scheduler's accounting."""
    try:
        rows = request(config, "GET", "/admin/accounting", params={"by": "slurm_job"})["rows"]
    except HookError as err:
        log.error("no QPU usage for the job: %s", err)
        return {"error": str(err)}
    row = next((r for r in rows if r["key"] == key), None)
    if row is None:
        return {"qpu_jobs": 0, "shots": 0, "qpu_seconds": 0.0}
    return {"qpu_jobs": row["jobs"], "shots": row["shots"], "qpu_seconds": row["qpu_seconds"]}


def usage(config: GridEngineConfig, job_ids: list[str]) -> list[dict[str, Any]]:
    """The accounting lines of ``job_ids`` (all when empty), oldest first."""
    path = Path(config.accounting_file)
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    wanted = set(job_ids)
    return [u for u in lines if not wanted or u["job_id"] in wanted]


# -- the load sensor -----------------------------------------------------------------------------


def load_values(config: GridEngineConfig) -> tuple[dict[str, int], str | None]:
    """``{ready_complex: 0|1, complex: free slots}`` now, and why the scheduler could not say
    (then readiness is 0 and the free slots are ``slots_total``: Grid Engine's own booking)."""
    values = {config.ready_complex: 0}
    if config.slots_total:
        values[config.complex] = config.slots_total
    try:
        device = request(config, "GET", "/device")
        ready = device["accessible"] and not device["draining"] and device["state"] in READY_STATES
        values[config.ready_complex] = int(bool(ready))
        if config.slots_total:
            sessions = request(config, "GET", "/sessions", params={"active": "true"})
            used = sum(s["qpu_slots"] for s in sessions)
            values[config.complex] = max(0, config.slots_total - used)
    except HookError as err:
        return values, str(err)
    return values, None


def load_sensor(config: GridEngineConfig | None, stdin: IO[str], stdout: IO[str]) -> None:
    """Grid Engine's load sensor protocol: a line in → a ``begin``/``end`` report out, until
    ``quit`` or end of input. Each report is bounded by ``deadline_s``; without settings (the
    file is broken) every report says "not ready". A failure is logged when it starts and
    when it ends, not at every report."""
    failing: str | None = None
    for line in stdin:
        if line.strip() == "quit":
            return
        values, error = {GridEngineConfig.model_fields["ready_complex"].default: 0}, "no settings"
        try:
            if config is not None:
                with deadline(config.deadline_s):
                    values, error = load_values(config)
        except Exception as err:  # a report must always come back
            error = str(err)
        if error != failing:
            if error:
                log.error("load sensor: QPU reported not ready: %s", error)
            else:
                log.info("load sensor: the scheduler answers again")
            failing = error
        report = [f"global:{name}:{value}" for name, value in values.items()]
        stdout.write("\n".join(["begin", *report, "end"]) + "\n")
        stdout.flush()


# -- entry points --------------------------------------------------------------------------------


def run_hook(hook: str, config_path: str | None) -> int:
    """``qhpc gridengine <hook>``. Always 0: a failing prolog puts the queue in error.

    Each hook runs in the fixed :data:`~qhpc_lab.hpc.hooks.HOOK_ENVIRONMENT`: a root prolog
    or epilog gets the job's ``qsub -v`` variables, and none of them may steer it; the job is
    the shepherd's (:func:`shepherd_job`)."""
    hooks.isolate({})
    if hook == "load-sensor":
        config = None
        log_to(GridEngineConfig.SECTION, hook, "", None)
        try:
            config = GridEngineConfig.load(config_path)
            log_to(GridEngineConfig.SECTION, hook, "", config.log_file)
        except Exception as err:  # keep answering (not ready) rather than die
            log.error("%s", err)
        load_sensor(config, sys.stdin, sys.stdout)
        return 0
    step = prolog if hook == "prolog" else epilog
    return run_guarded(
        GridEngineConfig,
        hook,
        "",
        config_path,
        lambda c: step(c, _named(shepherd_job(c))),
        logging.WARNING,  # the prolog's and epilog's stderr is the job's
    )


def _named(job: ShepherdJob) -> ShepherdJob:
    hooks.name_job(job.key)
    return job


def write_hook_scripts(directory: Path, python: str, config: str) -> dict[str, Path]:
    """The prolog, epilog and load sensor scripts the queue and host configuration name;
    ``python`` runs as root and as the execution daemon's user, so every user must be able to
    run it (else PermissionError)."""
    labels = {hook: f"Grid Engine {setting}" for hook, setting in HOOKS.items()}
    return hooks.write_hook_scripts(directory, python, config, "gridengine", labels)


def configuration(scripts: Mapping[str, Path], config: GridEngineConfig) -> dict[str, str]:
    """What to give Grid Engine, by what takes it: the complexes, the global host's capacity,
    the queue's prolog and epilog, the host configuration's load sensor."""
    return {
        "complexes (qconf -mc)": (
            f"{config.complex} {config.complex} INT <= YES JOB 0 0\n"
            f"{config.ready_complex} {config.ready_complex} INT <= YES NO 0 0"
        ),
        "global host (qconf -me global)": (
            f"complex_values {config.complex}={config.slots_total or 'N'},{config.ready_complex}=1"
        ),
        "queue (qconf -mq QUEUE)": (
            f"prolog root@{scripts['prolog']}\nepilog root@{scripts['epilog']}"
        ),
        "host configuration (qconf -mconf HOST)": f"load_sensor {scripts['load-sensor']}",
    }
