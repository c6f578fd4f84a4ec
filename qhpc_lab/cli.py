"""The ``qhpc`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from qhpc_lab import __version__, admin
from qhpc_lab.scheduler.config import add_setting_flags
from qhpc_lab.standin import RESULT_FORMATS

if TYPE_CHECKING:
    from qhpc_lab.runs import NotebookRun


def _freeze_start_up() -> None:
    """Leave what the imports and the app built to the end of the process, outside the cyclic
    garbage collector: it lives as long as the daemon, and walking its 150 000 objects costs
    each full collection, and the interpreter's exit, half a second of CPU (measured on the
    2-core CI machine; docs/development.md "Start-up cost")."""
    import gc

    gc.freeze()


def _serve(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url  # the banner names the database, never its password

    from qhpc_lab import tracing
    from qhpc_lab.scheduler import create_app, logs
    from qhpc_lab.scheduler.app import qpu_driver
    from qhpc_lab.scheduler.config import SchedulerConfig, setting_flags
    from qhpc_lab.scheduler.serving import serve

    config = SchedulerConfig.load(args.config, **setting_flags(args))
    logs.configure(config.log_format)
    traces = tracing.configure(
        "qhpc-scheduler", config.otlp_endpoint, sampling_ratio=config.trace_sampling_ratio
    )
    app = create_app(config, driver=qpu_driver(config))
    _freeze_start_up()
    driver = app.state.scheduler.driver
    profile = driver.profile
    device = f"profile {profile.name}" if not config.qpu_url else f"QPU API {config.qpu_url}"
    print(
        f"qhpc scheduler: device {profile.spec.name}, {device}\n  {driver.notice}"
        f"\n  database {make_url(config.db_url).render_as_string(hide_password=True)}"
        f"\n  auth {', '.join(config.auth)}",
        flush=True,
    )
    try:
        serve(
            app,
            config,
            listening=f"  listening on http://{config.host}:{config.port} (API docs at /docs)",
            on_stop=app.state.scheduler.bus.close,  # the /events streams end, clients reconnect
        )
    finally:
        if traces is not None:
            traces.shutdown()  # the last spans are flushed to the collector
    return 0


def _qpu_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from qhpc_lab.qpu import DeviceProfile
    from qhpc_lab.qpu.emulated import STANDS_IN, EmulatedQPU
    from qhpc_lab.standin.qpu_api import API_PREFIX, ServedQPU, create_app

    profile = DeviceProfile.load(args.profile)
    setup_s = profile.job_setup_s if args.setup is None else args.setup
    device = ServedQPU(EmulatedQPU(profile), setup_s, args.result_format)
    print(
        f"qhpc qpu: {STANDS_IN}\n  device {profile.spec.name}, profile {profile.name}, "
        f"{setup_s:g} s setup a job, calibration every {profile.calibration_interval_s:g} s "
        f"({profile.calibration_duration_s:g} s DOWN)\n"
        f"  QPU API at http://{args.host}:{args.port}{API_PREFIX}",
        flush=True,
    )
    app = create_app(device)
    _freeze_start_up()
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2
    )
    return 0


def _token(args: argparse.Namespace) -> int:
    from qhpc_lab.scheduler.auth import (
        DEFAULT_TOKEN_TTL_S,
        load_or_create_secret,
        make_token,
    )
    from qhpc_lab.scheduler.config import SchedulerConfig, state_dir
    from qhpc_lab.vocabulary import parse_duration

    try:
        ttl_s = parse_duration(args.ttl) if args.ttl else DEFAULT_TOKEN_TTL_S
    except ValueError as err:
        raise SystemExit(f"qhpc scheduler token: --ttl: {err}") from None
    config = SchedulerConfig.load(args.config)
    path = state_dir() / "token.secret"
    if not config.token_secret and not path.exists():
        print(
            f"qhpc scheduler token: no secret at {path}: a new one is made there; only a "
            "scheduler with this state folder (QHPC_STATE_DIR) accepts the token",
            file=sys.stderr,
        )
    secret = config.token_secret or load_or_create_secret(path)
    print(make_token(secret, args.uid, args.admin, ttl_s=ttl_s))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from qhpc_lab.scheduler.config import SchedulerConfig
    from qhpc_lab.scheduler.store import migrate

    url = SchedulerConfig.load(args.config, db=args.db).db_url
    try:
        migrate.command(
            url, to=args.to, downgrade_to=args.downgrade, show=args.show, as_sql=args.sql
        )
    except migrate.SchemaError as err:
        raise SystemExit(f"qhpc scheduler migrate: {err}") from None
    return 0


def _emulate(args: argparse.Namespace) -> int:
    """Emulate a Program envelope and write its Emulation JSON atomically: what a cluster
    emulator's batch job runs on a compute node. Everything that can be refused is, before the
    evolution starts; stderr gets one line per stage."""
    import tempfile

    from qhpc_lab.programs.sdk_imports import defer_iri_grammar

    defer_iri_grammar()  # before the SDK imports: a second of CPU on the job's cores
    from qhpc_lab import emulators
    from qhpc_lab.programs import Program

    def say(line: str) -> None:
        print(f"qhpc emulate: {line}", file=sys.stderr, flush=True)

    out = Path(args.out)
    if not os.access(out.parent, os.W_OK | os.X_OK):
        say(f"--out {out}: cannot write in {out.parent}")
        return 2
    try:
        program = Program.from_json(Path(args.program).read_text())
        found = emulators.facts(program)
        plan = emulators.plan(program, args.engine, args.max_bond_dim)
        where = emulators.device_name(args.device)
    except (OSError, ValueError) as err:
        say(f"{args.program}: {err}")
        return 2
    say(f"{args.program}: {program.format}, {found.atoms} atoms, {found.duration_ns} ns")
    say(f"plan on {where}: {plan.describe()}")
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores the batch job was given
    try:
        result = emulators.emulate(
            program,
            engine=args.engine,
            max_bond_dim=args.max_bond_dim,
            precision=args.precision,
            device=args.device,
            progress=say,
        )
    except ValueError as err:
        say(str(err))
        return 2
    with tempfile.NamedTemporaryFile(
        "w", dir=out.parent, prefix=f".{out.name}.", delete=False
    ) as f:
        f.write(result.to_json() + "\n")
    os.replace(f.name, out)
    say(f"wrote {out}: {result.describe()}")
    return 0


def _profiles(_args: argparse.Namespace) -> int:
    from qhpc_lab.qpu import DeviceProfile, profiles

    for name in profiles():
        profile = DeviceProfile.load(name)
        print(f"{name:14} {profile.description}")
    return 0


def _hook(args: argparse.Namespace) -> int:
    """Run one of a cluster's hooks (``qhpc_lab.hpc.slurm`` or ``.gridengine``)."""
    return importlib.import_module(f"qhpc_lab.hpc.{args.cluster}").run_hook(args.hook, args.config)


def _hook_scripts(args: argparse.Namespace) -> int:
    """Write a cluster's hook scripts and print the settings that name them."""
    hpc = importlib.import_module(f"qhpc_lab.hpc.{args.cluster}")
    python = args.python or sys.executable
    scripts = hpc.write_hook_scripts(Path(args.directory), python, args.config)
    if args.cluster == "slurm":
        print(f"# slurm.conf lines; each job's user must be able to run {python} (TaskProlog)")
        print(hpc.configuration(scripts))
        return 0
    config = hpc.GridEngineConfig(slots_total=args.slots or 0)
    print(f"# Grid Engine settings; root and the execution daemon's user run {python}")
    for where, text in hpc.configuration(scripts, config).items():
        print(f"# {where}\n{text}")
    return 0


def _check(args: argparse.Namespace) -> int:
    """Check a cluster's hook setup before it is deployed: 0 when good, else 1."""
    from qhpc_lab.hpc.check import check_site

    name = f"qhpc {args.cluster} check"
    report = check_site(args.cluster, args.config, args.python or sys.executable, args.offline)
    print("\n".join([f"{name}:", *(f"  {line}" for line in report.checked)]))
    for problem in report.problems:
        print(f"{name}: error: {problem}", file=sys.stderr)
    if report.problems:
        count = len(report.problems)
        print(f"{name}: {count} problem(s): fix them before the hooks run", file=sys.stderr)
        return 1
    print(f"{name}: ok")
    return 0


def _gridengine_usage(args: argparse.Namespace) -> int:
    from qhpc_lab.hpc.gridengine import GridEngineConfig, usage

    for line in usage(GridEngineConfig.load(args.config), args.job_ids):
        print(json.dumps(line))
    return 0


def _dev_cluster(args: argparse.Namespace) -> int:
    from qhpc_lab.hpc.devcluster import DevCluster, DevClusterError, load_cluster

    try:
        cluster = load_cluster(args.dir, getattr(args, "scheduler", None))
        if args.action == "start":
            for name in (
                "slots",
                "device",
                "qpus",
                "device_b",
                "scheduler_port",
                "qpu_port",
                "slurmctld_port",
                "slurmd_port",
                "qmaster_port",
                "execd_port",
            ):
                if getattr(args, name) is not None:
                    if not hasattr(cluster, name):
                        raise DevClusterError(f"--{name.replace('_', '-')} is not for this cluster")
                    setattr(cluster, name, getattr(args, name))
            cluster.start()
            if isinstance(cluster, DevCluster):
                devices = (cluster.device, cluster.device_b)
                qpus = "".join(
                    f"\n  {name:<10} {url} (MUNGE auth), licence and GRES {name}:{cluster.slots}"
                    f"\n  {'':<10} drives device {device} through the QPU API at "
                    f"http://127.0.0.1:{cluster.qpu_port + i}"
                    for i, ((name, url), device) in enumerate(
                        zip(cluster.scheduler_urls.items(), devices, strict=False)
                    )
                )
                licences = ",".join(f"{name}:1" for name in cluster.resources)
                print(
                    f"qhpc dev-cluster: running in {cluster.directory}{qpus}"
                    f"\n  slurm      node {cluster.node} {cluster.node_state()}"
                    f"\n  hooks log  {cluster.hooks_log}"
                    f"\n  job python {cluster.python}"
                    f"\nexport SLURM_CONF={cluster.conf}"
                    f"\nsbatch -L {licences} --wrap '{cluster.python} my_qpu_script.py'"
                )
            else:
                exports = "".join(f"\nexport {k}={v}" for k, v in cluster.environ.items())
                print(
                    f"qhpc dev-cluster: running in {cluster.directory}"
                    f"\n  scheduler  {cluster.scheduler_url} (MUNGE auth), drives device "
                    f"{cluster.device} through the QPU API at http://127.0.0.1:{cluster.qpu_port}"
                    f"\n  grid engine queue {cluster.queue}@localhost, consumable "
                    f"{cluster.complex}={cluster.slots}, load sensor every "
                    f"{cluster.load_report_s} s"
                    f"\n  hooks log  {cluster.hooks_log}"
                    f"\n  QPU usage  {cluster.accounting_file}"
                    f"\n  job python {cluster.python}{exports}"
                    f"\necho '{cluster.python} my_qpu_script.py' | qsub -l {cluster.complex}=1"
                )
        elif args.action == "stop":
            stopped = cluster.stop()
            print(f"qhpc dev-cluster: stopped {', '.join(stopped) or 'nothing (none running)'}")
        else:
            print(json.dumps(cluster.status(), indent=2))
    except DevClusterError as err:
        print(f"qhpc dev-cluster: {err}", file=sys.stderr)
        return 1
    return 0


KERNEL_NAME = "python3-qpu"


def _kernelspec_source() -> Path:
    """The kernelspec folder: ``kernels/`` of a checkout, else the copy the wheel installs."""
    for folder in (
        Path(__file__).resolve().parent.parent / "kernels" / KERNEL_NAME,
        Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME,
    ):
        if (folder / "kernel.json").is_file():
            return folder
    raise OSError(f"the {KERNEL_NAME} kernelspec is missing from this installation")


def _kernels_install(args: argparse.Namespace) -> int:
    """Install "Python 3 (QPU)" running this interpreter (whatever jupyter starts it)."""
    import shutil
    import tempfile

    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory() as scratch:
        spec = Path(scratch) / KERNEL_NAME
        shutil.copytree(_kernelspec_source(), spec)
        kernel = json.loads((spec / "kernel.json").read_text())
        kernel["argv"][0] = sys.executable
        (spec / "kernel.json").write_text(json.dumps(kernel, indent=2) + "\n")
        where = KernelSpecManager().install_kernel_spec(
            str(spec),
            KERNEL_NAME,
            user=args.user,
            prefix=sys.prefix if args.sys_prefix else args.prefix,
        )
    print(f'qhpc: installed kernel {KERNEL_NAME!r} ("{kernel["display_name"]}") in {where}')
    return 0


def _run_submit(args: argparse.Namespace) -> int:
    """``qhpc run NOTEBOOK``: check, submit, and with ``--wait`` follow it to its end."""
    from qhpc_lab import runs

    request = runs.RunRequest(
        notebook=Path(args.notebook),
        qpus=_qpu_share(args.qpu),
        time_limit=args.time,
        job_class=args.job_class,
        parameters={name: _parameter_value(value) for name, value in args.parameter},
        scheduler=args.scheduler,
        output_dir=Path(args.output_dir) if args.output_dir else None,
    )
    try:
        if args.check:
            runs.check(request)
            print(f"qhpc run: {args.notebook} can run as a batch job (nothing submitted)")
            return 0
        run = runs.submit(request)
    except runs.RunRefused as err:
        print(f"qhpc run: {err}", file=sys.stderr)
        return 1
    print(
        f"qhpc run: submitted {run.notebook} as {run.batch.system} job {run.batch.id} "
        f"(run {run.id}): {_share(run.qpus)}, class {run.job_class}"
        f"\n  executed notebook: {run.executed}\n  follow it: qhpc runs status {run.id}"
    )
    return _follow(run.id) if args.wait else 0


def _share(qpus: int | dict[str, int]) -> str:
    """A run's QPU share in words: ``1 QPU slot``, ``qpu_a 1, qpu_b 2``."""
    if isinstance(qpus, int):
        return f"{qpus} QPU slot{'s' * (qpus != 1)}" if qpus else "no QPU"
    return ", ".join(f"{name} {slots}" for name, slots in qpus.items())


def _follow(run_id: str) -> int:
    """Print each change of the run until it ends; 0 when it completed."""
    import time

    from qhpc_lab import runs

    seen = None
    while True:
        run = runs.run(run_id)
        now = (run.batch.state, run.batch.node, run.qpu_jobs)
        if now != seen:
            seen = now
            print(_run_line(run), flush=True)
        if run.finished:
            if run.failure:
                print(f"  failed: {run.failure}")
            print(f"  executed notebook: {run.executed}")
            return 0 if run.batch.state == "COMPLETED" else 1
        time.sleep(2)


def _qpu_share(values: list[str] | None) -> int | dict[str, int]:
    """``--qpu N`` (the site's QPU) or ``--qpu RESOURCE=N ...`` (several QPUs)."""
    if not values:
        return 1
    if len(values) == 1 and "=" not in values[0]:
        return _slots(values[0])
    shares = {}
    for value in values:
        resource, sep, slots = value.partition("=")
        if not sep or not resource:
            raise ValueError(f"--qpu takes N or RESOURCE=N: not {value!r}")
        shares[resource] = _slots(slots)
    return shares


def _slots(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"a QPU share is a number of slots: not {text!r}")
    return int(text)


def _parameter_value(text: str) -> object:
    """``-p NAME VALUE``: a Python literal (``100``, ``0.5``, ``True``, ``[1, 2]``) or else
    the text itself."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _run_line(run: NotebookRun) -> str:
    """One run in a line: id, batch state (why it waits, where it runs), QPU jobs, notebook."""
    from qhpc_lab.wire.times import iso_time

    batch = run.batch
    why = [batch.reason] if batch.reason and batch.state == "PENDING" else []
    if batch.start_estimate and batch.state == "PENDING":
        why.append(f"start {iso_time(batch.start_estimate, ' ', 'seconds')}")
    state = f"{batch.state} ({', '.join(why)})" if why else str(batch.state)
    if batch.node and batch.state == "RUNNING":
        state += f" on {batch.node}"
    jobs = f", {len(run.qpu_jobs)} QPU job(s)" if run.qpu_jobs else ""
    return f"{run.id}  {batch.system} {batch.id} {state}{jobs}  {run.notebook.name}"


def _runs_status(args: argparse.Namespace) -> int:
    """``qhpc runs``: every run in a line; ``qhpc runs status ID``: one run in full."""
    from qhpc_lab import runs

    try:
        if not getattr(args, "run_id", None):
            found = runs.runs()
            print("\n".join(_run_line(r) for r in found) or "qhpc runs: no notebook runs yet")
            return 0
        run = runs.run(args.run_id)
    except runs.RunRefused as err:
        print(f"qhpc runs: {err}", file=sys.stderr)
        return 1
    print(_run_line(run))
    print(f"  notebook   {run.notebook}\n  executed   {run.executed}\n  log        {run.output}")
    print(f"  class {run.job_class}, {_share(run.qpus)}, parameters {run.parameters or '{}'}")
    for job in run.qpu_jobs:
        print(f"  QPU job {job['id']} on {job['target']}: {job['status']}")
    if run.failure:
        print(f"  failed: {run.failure}")
    return 0


def _runs_cancel(args: argparse.Namespace) -> int:
    from qhpc_lab import runs

    try:
        run = runs.cancel(args.run_id)
    except runs.RunRefused as err:
        print(f"qhpc runs: {err}", file=sys.stderr)
        return 1
    print(_run_line(run))
    return 0


def _add_runs(commands: argparse._SubParsersAction) -> None:
    """``qhpc run NOTEBOOK`` and ``qhpc runs [status ID | cancel ID]`` (docs/notebook-runs.md:
    two commands, so that no notebook's name is mistaken for a subcommand)."""
    run = commands.add_parser(
        "run", help="run a notebook as a production batch job holding a QPU share"
    )
    run.add_argument("notebook", help="the .ipynb file")
    run.add_argument(
        "--qpu",
        action="append",
        metavar="N|RESOURCE=N",
        help="QPU slots the job holds (1); several QPUs: --qpu qpu_a=1 --qpu qpu_b=2",
    )
    run.add_argument("--time", help="time limit: 30m, 2h, 1:30:00 (default: the site's)")
    run.add_argument(
        "--class", dest="job_class", default="production", help="QPU job class (production)"
    )
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a value for the cell tagged parameters (a Python literal, else text)",
    )
    run.add_argument("--scheduler", choices=("slurm", "gridengine"), help="default: found")
    run.add_argument("--output-dir", help="where the executed notebook goes (beside it)")
    run.add_argument("--wait", action="store_true", help="follow the run until it ends")
    run.add_argument("--check", action="store_true", help="check only; submit nothing")
    run.set_defaults(run=_run_submit)
    runs = commands.add_parser("runs", help="your notebook runs: list, status, cancel")
    runs.set_defaults(run=_runs_status)
    sub = runs.add_subparsers(dest="action")
    status = sub.add_parser("status", help="one run: batch state, QPU jobs, failure, files")
    status.add_argument("run_id", metavar="ID")
    status.set_defaults(run=_runs_status)
    cancel = sub.add_parser("cancel", help="end the run's batch job (its QPU session too)")
    cancel.add_argument("run_id", metavar="ID")
    cancel.set_defaults(run=_runs_cancel)


def _add_cluster(
    commands: argparse._SubParsersAction,
    cluster: str,
    what: str,
    hooks: tuple[tuple[str, str], ...],
    scripts_help: str,
    python_help: str,
) -> tuple[argparse._SubParsersAction, argparse.ArgumentParser]:
    """A first-level scheduler's commands: its hooks, ``hook-scripts`` and ``check``; returns its
    subcommands and the ``hook-scripts`` parser, for what only this cluster has."""
    sub = commands.add_parser(cluster, help=what).add_subparsers(dest="hook", required=True)
    settings = f"/etc/qhpc/{cluster}.toml"
    for hook, hook_help in hooks:
        parser_hook = sub.add_parser(hook, help=hook_help)
        parser_hook.add_argument("--config", help=f"settings file (default {settings})")
        parser_hook.set_defaults(run=_hook, cluster=cluster)
    scripts = sub.add_parser("hook-scripts", help=scripts_help)
    scripts.add_argument("directory")
    scripts.add_argument("--config", default=settings, help="the hooks' settings")
    scripts.add_argument("--python", help=python_help)
    scripts.set_defaults(run=_hook_scripts, cluster=cluster)
    check = sub.add_parser("check", help="check the hooks' settings file, schedulers and Python")
    check.add_argument("--config", default=settings, help="the hooks' settings")
    check.add_argument("--python", help="the Python the hook scripts run (default: this one)")
    check.add_argument("--offline", action="store_true", help="do not ask the schedulers")
    check.set_defaults(run=_check, cluster=cluster)
    return sub, scripts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qhpc", description="qhpc-lab: a QPU from Jupyter on HPC")
    parser.add_argument("--version", action="version", version=f"qhpc-lab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    scheduler = commands.add_parser("scheduler", help="the second-level scheduler daemon")
    sub = scheduler.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", help="TOML settings file (also $QHPC_CONFIG)")
    add_setting_flags(serve)
    serve.set_defaults(run=_serve)
    token = sub.add_parser("token", help="print a bearer token for token auth")
    token.add_argument("--uid", required=True)
    token.add_argument("--admin", action="store_true")
    token.add_argument("--ttl", help="how long it is valid: 3600, 90m, 12h, 7d (default: a day)")
    token.add_argument("--config")
    token.set_defaults(run=_token)
    sub.add_parser("profiles", help="list the shipped device profiles").set_defaults(run=_profiles)
    migrate = sub.add_parser(
        "migrate", help="bring the database to this release's schema (or back)"
    )
    migrate.add_argument("--config", help="TOML settings file (also $QHPC_CONFIG): its db")
    migrate.add_argument("--db", help="SQLAlchemy URL (default: the daemon's database)")
    target = migrate.add_mutually_exclusive_group()
    target.add_argument("--to", metavar="REV", default="head", help="upgrade to REV (head)")
    target.add_argument("--downgrade", metavar="REV", help="go back to REV (base: no tables)")
    target.add_argument("--show", action="store_true", help="print its revision, change nothing")
    migrate.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    migrate.set_defaults(run=_migrate)

    _add_cluster(
        commands,
        "slurm",
        "Slurm hooks: a job's qpu share becomes a session",
        (
            ("prolog", "Prolog (root, job start): open the job's scheduler session"),
            ("epilog", "Epilog (root, job end): revoke it, canceling its queued jobs"),
            ("task-prolog", "TaskProlog (job user): print the QRMI variables for each task"),
        ),
        "write the wrapper scripts slurm.conf names",
        "a Python every job user can run (default: this one; checked)",
    )
    sub, scripts = _add_cluster(
        commands,
        "gridengine",
        "Grid Engine hooks: a job's qpu request becomes a session",
        (
            ("prolog", "queue prolog (root@, job start): open the session, set the QRMI variables"),
            ("epilog", "queue epilog (root@, job end): revoke it, record the job's QPU usage"),
            ("load-sensor", "load sensor (execd): QPU readiness and free slots, global values"),
        ),
        "write the scripts the queue and host name",
        "a Python every user can run (default: this one; checked)",
    )
    scripts.add_argument("--slots", type=int, help="the QPU's slots (the qpu capacity)")
    usage = sub.add_parser("usage", help="per-job QPU usage the epilog recorded (JSON lines)")
    usage.add_argument("job_ids", nargs="*", help="Grid Engine job ids (default: all)")
    usage.add_argument("--config", help="settings file (default /etc/qhpc/gridengine.toml)")
    usage.set_defaults(run=_gridengine_usage)

    qpu = commands.add_parser("qpu", help="the emulated QPU behind Pasqal's QPU API")
    sub = qpu.add_subparsers(dest="action", required=True)
    qpu_serve = sub.add_parser(
        "serve", help="serve the emulated device over the QPU API (what Warden's worker drives)"
    )
    qpu_serve.add_argument("--profile", default="demo", help="device profile name or JSON file")
    qpu_serve.add_argument("--host", default="127.0.0.1")
    qpu_serve.add_argument("--port", type=int, default=8090)
    qpu_serve.add_argument(
        "--setup",
        type=float,
        default=None,
        help="seconds a job spends before its first shot (default: the profile's job_setup_s)",
    )
    qpu_serve.add_argument(
        "--result-format",
        choices=RESULT_FORMATS,
        default="json",
        help="a job's result text: JSON, or a Python dict literal as Warden's QPU mock writes",
    )
    qpu_serve.set_defaults(run=_qpu_serve)

    emulate = commands.add_parser(
        "emulate", help="emulate a program envelope (JSON) and write the result as JSON"
    )
    emulate.add_argument("program", help="Program envelope JSON file")
    emulate.add_argument("--out", required=True, help="result file, written atomically")
    emulate.add_argument("--engine", help="qutip, emu-sv, emu-mps or aer (default: by size)")
    emulate.add_argument("--max-bond-dim", type=int, help="emu-mps bond dimension cap (32)")
    emulate.add_argument("--precision", type=float, help="emu-mps truncation precision (1e-5)")
    emulate.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    emulate.set_defaults(run=_emulate)

    dev = commands.add_parser(
        "dev-cluster", help="single-node Slurm or Grid Engine + scheduler on this machine"
    )
    sub = dev.add_subparsers(dest="action", required=True)
    default_dir = os.environ.get("QHPC_DEV_CLUSTER_DIR", "/tmp/qhpc-dev-cluster")
    for action, what in (
        ("start", "install if needed and start munged, scheduler and the cluster's daemons"),
        ("stop", "stop what start started"),
        ("status", "what runs, as JSON"),
    ):
        parser_action = sub.add_parser(action, help=what)
        parser_action.add_argument(
            "--dir",
            default=default_dir,
            help="its files (default $QHPC_DEV_CLUSTER_DIR or %(default)s; one cluster each)",
        )
        parser_action.set_defaults(run=_dev_cluster)
        if action == "start":
            parser_action.add_argument(
                "--scheduler",
                choices=("slurm", "gridengine"),
                help="the first-level scheduler (slurm, or what --dir already holds)",
            )
            parser_action.add_argument("--slots", type=int, help="QPU slots (4)")
            parser_action.add_argument("--device", help="emulated QPU profile (test)")
            parser_action.add_argument(
                "--qpus",
                type=int,
                choices=(1, 2),
                help="Slurm: 2 starts QPUs qpu_a and qpu_b, a scheduler and licence each (1)",
            )
            parser_action.add_argument("--device-b", help="the second QPU's profile (demo)")
            parser_action.add_argument("--scheduler-port", type=int, help="8016, 8017 for GE")
            parser_action.add_argument(
                "--qpu-port", type=int, help="the emulated QPU's QPU API: 8096, 8098 for GE"
            )
            parser_action.add_argument("--slurmctld-port", type=int, help="6817")
            parser_action.add_argument("--slurmd-port", type=int, help="6818")
            parser_action.add_argument("--qmaster-port", type=int, help="6444")
            parser_action.add_argument("--execd-port", type=int, help="6445")

    admin.add_parser(commands)
    _add_runs(commands)

    kernels = commands.add_parser("kernels", help="Jupyter kernelspecs")
    sub = kernels.add_subparsers(dest="action", required=True)
    install = sub.add_parser("install", help='install "Python 3 (QPU)": %%qpu magics preloaded')
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="in ~/.local/share/jupyter")
    where.add_argument("--sys-prefix", action="store_true", help="in this environment")
    where.add_argument("--prefix", help="under PREFIX/share/jupyter")
    install.set_defaults(run=_kernels_install)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as err:
        print(f"qhpc: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
