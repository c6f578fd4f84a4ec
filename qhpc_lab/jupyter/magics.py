"""``%qpu`` and ``%%qpu``: each a thin layer over the Python API (one client, last job kept).

``%load_ext qhpc_lab`` registers them; ``%qpu help`` (or ``%qpu?``) lists the commands,
``%qpu help COMMAND`` tells one (:data:`COMMANDS`). A magic that does not
do what it was asked fails its cell (so "Run All" stops there) with a :class:`MagicError`: one
``qpu: ...`` line for a mistake (unknown target, bad option, a program the device refuses, a
scheduler in maintenance), a job that ended without a result or a wait that was interrupted;
for an error in the cell's own code, IPython's usual traceback of that code (``Cell In[n],
line k``, counted in the cell), none of the magic's frames. Output goes through :func:`show`,
the hook for richer frontends.

Waiting, in a Jupyter kernel: a ``%%qpu`` cell still ends only when its result is in (so "Run
All" and ``-o VAR`` work), but the kernel *awaits* it. An input transformer turns the cell into
``await <magics>.qpu_async(...)``, which IPython runs as an async cell on the kernel's event
loop; meanwhile the job's live panel (:mod:`qhpc_lab.jupyter.widgets`) updates from that loop
and its cancel button works. Interrupting the kernel stops the waiting, not the job, and the
panel keeps following it. ``--no-wait`` returns at once with the live panel. Elsewhere (plain
IPython, scripts calling the magic) the cell blocks and prints text, as the Python API does.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import itertools
import json
import os
import shlex
import warnings
from datetime import UTC
from pathlib import Path
from typing import Any

from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display

from qhpc_lab.client import Client, ClientError, Job, Quota, Result, default_client
from qhpc_lab.programs import ProgramError
from qhpc_lab.programs.sdk_imports import defer_iri_grammar
from qhpc_lab.vocabulary import UNIT_NAMES
from qhpc_lab.wire import batchrun

USAGE = (
    "%qpu targets | use NAME | jobs [--all] | status [ID] | result [ID] | logs [ID] | cancel ID "
    "| estimate VARIABLE | quotas | loop start [NAME] [--think S] | loop stop | loop "
    "| help [COMMAND], or %%qpu"
)

COMMANDS: dict[str, tuple[str, str]] = {
    "targets": ("%qpu targets", "where programs can run; * marks the default"),
    "use": ("%qpu use NAME", "send later cells to target NAME (an error if it is unreachable)"),
    "qpu": (
        "%%qpu [VARIABLE] [--shots N] [--target T] [--class C] [--name S] "
        "[--single-calibration] [--sweep NAME=V1,V2,... | --sweep-file F] [--no-wait] [-o VAR]",
        "run the cell, submit its last expression (or VARIABLE), wait and show the result\n"
        "-o VAR stores the Result (the Job with --no-wait) in VAR\n"
        "--class: the site's class for cells by default (development unless the scheduler's\n"
        "  cell_job_class says otherwise: cells are interactive work)\n"
        "--target auto: the QPU that accepts the program and finishes it first (the default\n"
        "  when the job has several QPUs)\n"
        "--single-calibration: all its shots under one calibration of the device\n"
        "--sweep NAME=V1,V2,...: one job running the program once per value, --shots each\n"
        "  (several --sweep: every combination); --sweep-file F: a JSON list of {NAME: value}\n"
        "  (a scheduler target; the Result's .sets holds each point's counts)\n"
        "--no-wait: show the job and return; --name S: the job's name",
    ),
    "jobs": (
        "%qpu jobs [--all] [--target T]",
        "this kernel's jobs\n"
        "--all: every job of yours the targets know, from any kernel or script (each\n"
        "  scheduler lists yours; elsewhere, this kernel's), grouped by target, oldest first\n"
        "--target T: those on target T only",
    ),
    "status": ("%qpu status [ID]", "a job's state (default: the last job of this kernel)"),
    "result": ("%qpu result [ID]", "wait for a job and show its result"),
    "logs": (
        "%qpu logs [ID]",
        "a job's story as its target tells it: queued, chunks run, waits, holds, its end\n"
        "(the emulator keeps no log: what this kernel knows of the job)",
    ),
    "cancel": ("%qpu cancel ID", "cancel a job (it ends CANCELED unless it had ended)"),
    "estimate": (
        "%qpu estimate [--shots N] [--class C] [--target T] VARIABLE",
        "where the program in VARIABLE would stand if submitted now: position, start, end\n"
        "nothing is queued; asks the target %%qpu would use, or --target T (only a scheduler\n"
        "  target can say)\n"
        "--class: the site's class for cells by default, as for cells",
    ),
    "quotas": (
        "%qpu quotas [--target T]",
        "your quotas and their use this period: budget, used, unit, period, reset\n"
        "as each scheduler target (or --target T) reports them; a submission that would go\n"
        "  past one is refused",
    ),
    "loop": (
        "%qpu loop start [NAME] [--think S] | loop stop | loop",
        "start: later cells are one hybrid loop, until stop; loop: the active one\n"
        "the scheduler may hold the QPU between the loop's jobs for up to S s (docs/policy.md)\n"
        "(%qpu session ... is its deprecated name: a session is a Slurm job's QPU share)",
    ),
    "help": ("%qpu help [COMMAND]", "these commands; with COMMAND, that one's help"),
}
"""Each command's synopsis and help: what ``%qpu help`` and ``%qpu?`` show."""
FLAGS = {
    "job_class": "--class",
    "max_runs": "--shots",
    "shots": "--shots",
    "single_calibration": "--single-calibration",
}
"""The option of the magics that sets what a refusal's rule names (its Python keyword)."""


class MagicError(Exception):
    """Raised by a magic that failed, so that its cell fails; IPython shows :attr:`lines` (its
    ``_render_traceback_`` hook) instead of a traceback through the magic."""

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.lines = lines or [message]

    def _render_traceback_(self) -> list[str]:
        return self.lines


def show(obj: object, client: Client | None = None) -> object | None:
    """How the magics present what they produce: the one hook a richer frontend replaces.

    Called with a Job (submitted, ``status``, ``cancel``), a Result, a TargetInfo (``use``)
    or a list of TargetInfo or Job. In a Jupyter kernel a Job becomes a live job panel and a
    list of targets a targets panel (``client`` refreshes it), returned. Otherwise plain text
    — a Result through IPython's display (its HTML in notebooks), anything else as its
    one-line ``str`` per item — and None.
    """
    if live() and not batch_run() and isinstance(obj, Job | list):
        from qhpc_lab.jupyter import widgets

        panel = widgets.panel_for(obj, client or default_client())
        if panel is not None:
            panel.show()
            return panel
    if isinstance(obj, Result):
        display(obj)
    else:
        print("\n".join(str(item) for item in (obj if isinstance(obj, list) else [obj])))
    return None


def live(shell: Any | None = None) -> bool:
    """True in a Jupyter kernel (it has comms for widgets) whose event loop is running: where
    panels can follow jobs from that loop. Plain IPython and scripts get text."""
    shell = shell or get_ipython()
    if getattr(shell, "kernel", None) is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def batch_run() -> bool:
    """True while a notebook runs as a batch job (``qhpc run``, docs/notebook-runs.md): a
    kernel with no browser, where cells print their progress as text instead of panels."""
    return bool(os.environ.get(batchrun.BATCH_RUN))


def awaits_cells(shell: Any | None = None) -> bool:
    """True where the kernel can await a ``%%qpu`` cell: live, with IPython's asyncio
    autoawait (the default; ``%autoawait off`` makes cells block again)."""
    from IPython.core.async_helpers import _asyncio_runner

    shell = shell or get_ipython()
    return live(shell) and bool(shell.autoawait) and shell.loop_runner is _asyncio_runner


_CELL_CALL = "get_ipython().run_cell_magic('qpu', "


def await_qpu_cells(lines: list[str]) -> list[str]:
    """IPython input transformer: in a kernel, a ``%%qpu`` cell becomes an awaited call of
    :meth:`QPUMagics.qpu_async`, which IPython then runs as an async cell (module doc)."""
    if len(lines) == 1 and lines[0].startswith(_CELL_CALL) and awaits_cells():
        call = f"get_ipython().magics_manager.registry[{QPUMagics.__name__!r}].qpu_async("
        return [f"await {call}{lines[0][len(_CELL_CALL) :]}"]
    return lines


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit the kernel
        usage = " ".join(self.format_usage().split()[1:])
        raise UsageError(f"{message} (usage: {usage})")


_CELL = _Parser(prog="%%qpu", add_help=False)
_CELL.add_argument("variable", nargs="?")
_CELL.add_argument("--shots", type=int)
_CELL.add_argument("--target")
_CELL.add_argument("--class", dest="job_class")
_CELL.add_argument("--name")
_CELL.add_argument("--single-calibration", action="store_true")
_CELL.add_argument("--sweep", action="append", metavar="NAME=V1,V2,...")
_CELL.add_argument("--sweep-file", metavar="PATH")
_CELL.add_argument("--no-wait", action="store_true")
_CELL.add_argument("-o", dest="output", metavar="VAR")

_JOBS = _Parser(prog="%qpu jobs", add_help=False)
_JOBS.add_argument("--all", action="store_true")
_JOBS.add_argument("--target", metavar="T")

_QUOTAS = _Parser(prog="%qpu quotas", add_help=False)
_QUOTAS.add_argument("--target", metavar="T")

_ESTIMATE = _Parser(prog="%qpu estimate", add_help=False)
_ESTIMATE.add_argument("variable", metavar="VARIABLE")
_ESTIMATE.add_argument("--shots", type=int, metavar="N")
_ESTIMATE.add_argument("--class", dest="job_class", metavar="C")
_ESTIMATE.add_argument("--target", metavar="T")

_LOOP = _Parser(prog="%qpu loop", add_help=False)
_LOOP.add_argument("action", nargs="?", choices=("start", "stop"))
_LOOP.add_argument("name", nargs="?")
_LOOP.add_argument("--think", type=float, metavar="S")


@magics_class
class QPUMagics(Magics):
    def __init__(self, shell: Any, client: Client | None = None) -> None:
        """``client``: default, the process's (shared with ``qhpc_lab.submit``)."""
        super().__init__(shell)
        self._client = client

    @property
    def client(self) -> Client:
        return self._client or default_client()

    @line_cell_magic
    def qpu(self, line: str, cell: str | None = None) -> None:
        """Run programs on QPU targets (docs/client.md); ``%qpu help COMMAND`` tells one."""
        try:
            words = _split(line)
            if cell is None:
                self._line(words)
            else:
                self._cell(_CELL.parse_args(words), line, cell)
        except _MISTAKES as err:
            raise MagicError(f"qpu: {_in_magic_terms(err)}") from None

    def _line(self, words: list[str]) -> None:
        command, args = (words[0], words[1:]) if words else ("", [])
        with_options = {
            "loop": (_LOOP, self._loop),
            "session": (_LOOP, self._session),
            "jobs": (_JOBS, self._jobs),
            "quotas": (_QUOTAS, self._quotas),
            "estimate": (_ESTIMATE, self._estimate),
        }
        if command in with_options:
            parser, run = with_options[command]
            run(parser.parse_args(args))
            return
        arity = {"targets": (0, 0), "use": (1, 1), "status": (0, 1), "result": (0, 1)}
        arity.update({"logs": (0, 1), "cancel": (1, 1), "help": (0, 1)})
        if command not in arity:
            raise UsageError(f"unknown command {command!r}; use {USAGE}" if command else USAGE)
        low, high = arity[command]
        if not low <= len(args) <= high:
            raise UsageError(f"%qpu {command} takes {high or 'no'} argument{'s' * (high != 1)}")
        client = self.client
        if command == "help":
            print(command_help(*args))
        elif command == "targets":
            show(client.targets(), client)
        elif command == "use":
            show(client.use(args[0]), client)
        elif command == "logs":
            print(client.job(*args).logs())
        elif command == "status":
            job = client.job(*args)
            job.refresh()
            show(job, client)
        elif command == "result":
            self._wait(client.job(*args))
        else:
            job = client.job(*args)
            job.cancel()
            show(job, client)

    def _jobs(self, options: argparse.Namespace) -> None:
        client = self.client
        jobs = client.jobs(options.all, options.target)
        if not options.all:  # --all read them just now
            for job in jobs:
                job.refresh()
        where = f" on {options.target!r}" if options.target else ""
        if jobs:
            show(jobs, client)
        elif options.all:
            print(f"no job of yours{where or ' on any target'}")
        else:
            print(f"no job submitted from this kernel{where} yet")

    def _quotas(self, options: argparse.Namespace) -> None:
        quotas = self.client.quotas(options.target)
        where = f" on {options.target!r}" if options.target else ""
        print(quota_table(quotas) if quotas else f"no quota applies to your jobs{where}")

    def _estimate(self, options: argparse.Namespace) -> None:
        if options.variable not in self.shell.user_ns:
            raise UsageError(
                f"no variable named {options.variable!r}: %qpu estimate takes the name of the "
                "variable that holds the program"
            )
        program = self.shell.user_ns[options.variable]
        estimate = self.client.estimate(
            program, options.shots, options.target, options.job_class, interactive=True
        )
        if estimate is None:
            where = f"target {options.target!r}" if options.target else "the target cells go to"
            print(
                f"no estimate from {where}: only a scheduler target gives one "
                "(--target NAME; %qpu targets lists them)"
            )
        else:
            print(estimate)

    def _loop(self, options: argparse.Namespace) -> None:
        client = self.client
        if options.action == "start":
            loop = client.start_loop(options.name, options.think)
            print(f"started {loop}")
        elif options.action == "stop":
            loop = client.stop_loop()
            print(f"stopped {loop}" if loop else "no loop is active")
        else:
            print(client.active_loop or "no loop is active")

    def _session(self, options: argparse.Namespace) -> None:
        """``%qpu session``: :meth:`_loop` under its deprecated name, saying so in the cell."""
        with warnings.catch_warnings():
            warnings.simplefilter("always", DeprecationWarning)
            warnings.warn(
                "%qpu session is deprecated and will be removed: use %qpu loop",
                DeprecationWarning,
                stacklevel=2,
            )
        self._loop(options)

    def _cell(self, options: argparse.Namespace, line: str, cell: str) -> None:
        job = self._submit(options, line, cell)
        panel = show(job, self.client)
        outcome = job if options.no_wait else self._wait(job, show_result=panel is None)
        self._store(options.output, outcome)

    async def qpu_async(self, line: str, cell: str) -> None:
        """``%%qpu`` as a kernel runs it (module doc): the same cell, awaited on the kernel's
        loop so that its live panel updates while it waits."""
        try:
            line = self.shell.var_expand(line, depth=1)  # as run_cell_magic does ``{n}``, ``$n``
            options = _CELL.parse_args(_split(line))
            job = self._submit(options, line, cell)
            panel = show(job, self.client)
            outcome: Job | Result = job
            if not options.no_wait:
                outcome = await self._await(job, panel)
            self._store(options.output, outcome)
        except _MISTAKES as err:
            raise MagicError(f"qpu: {_in_magic_terms(err)}") from None

    def _submit(self, options: argparse.Namespace, line: str, cell: str) -> Job:
        program = self._evaluate(line, cell, options.variable)
        return self.client.submit(
            program,
            options.shots,
            options.target,
            options.job_class,
            options.name,
            single_calibration=options.single_calibration,
            interactive=True,
            variables=sweep_points(options.sweep, options.sweep_file),
        )

    def _store(self, variable: str | None, outcome: Job | Result) -> None:
        if variable:
            self.shell.user_ns[variable] = outcome

    def _wait(self, job: Job, show_result: bool = True) -> Result:
        try:
            result = job.result()
        except KeyboardInterrupt:
            raise _stopped_waiting(job) from None
        if show_result:
            show(result)
        return result

    async def _await(self, job: Job, panel: object | None) -> Result:
        from qhpc_lab.jupyter.widgets import JobPanel

        try:
            if batch_run():
                await _print_progress(job)
            result = await (panel.wait() if isinstance(panel, JobPanel) else job)
        except asyncio.CancelledError:  # the kernel's interrupt: stop waiting, keep the job
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise _stopped_waiting(job) from None
        if panel is None:
            show(result)
        return result

    def _evaluate(self, line: str, cell: str, variable: str | None) -> Any:
        """Run the cell in the user namespace; its last expression, or ``variable``.

        The code is compiled under a name IPython shows as this cell's (``Cell In[n]``), the
        ``%%qpu`` line first, so that tracebacks count lines in the cell; they start at the
        cell's code (:func:`_cell_error`)."""
        source = self.shell.transform_cell(cell)
        filename = self.shell.compile.cache(f"%%qpu {line}\n{source}", _cell_number(self.shell))
        namespace = self.shell.user_ns
        try:
            tree = self.shell.compile.ast_parse("\n" + source, filename)
            last = None
            if variable is None and tree.body and isinstance(tree.body[-1], ast.Expr):
                last = tree.body.pop()
            code = compile(tree, filename, "exec")
            value = None if last is None else compile(ast.Expression(last.value), filename, "eval")
            exec(code, namespace)
            if value is not None:
                return eval(value, namespace)
        except Exception as err:
            raise _cell_error(self.shell, err, filename) from err
        if variable is not None:
            if variable not in namespace:
                raise UsageError(f"the cell left no variable named {variable!r} to submit")
            return namespace[variable]
        raise UsageError("the cell must end with the program to submit, or name it: %%qpu VARIABLE")


def sweep_points(axes: list[str] | None, path: str | None) -> list[dict[str, Any]] | None:
    """A sweep's points from ``--sweep NAME=V1,V2,...`` (several: every combination, the
    last varying fastest) or ``--sweep-file`` (a JSON list of objects); None without them."""
    if path is not None:
        if axes:
            raise UsageError("give --sweep or --sweep-file, not both")
        try:
            points = json.loads(Path(path).expanduser().read_text())
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read the sweep file {path}: {err}") from None
        if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
            raise UsageError(f"the sweep file {path} must hold a JSON list of objects")
        return points
    if not axes:
        return None
    names, values = [], []
    for axis in axes:
        name, _, listed = axis.partition("=")
        try:
            values.append([_number(v) for v in listed.split(",")])
        except ValueError:
            raise UsageError(
                f"--sweep {axis}: write NAME=V1,V2,... with numbers, e.g. omega=1,1.5,2"
            ) from None
        names.append(name.strip())
    return [dict(zip(names, point, strict=True)) for point in itertools.product(*values)]


def _number(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


_MISTAKES = (ClientError, ProgramError, TimeoutError, UsageError)
"""What the user can act on: shown as one ``qpu: ...`` line (a job that ended without a
result is a ``JobError``, a ``ClientError``)."""


def _in_magic_terms(err: Exception) -> str:
    """``err``'s message, naming the magic's option where it names a Python keyword (a
    scheduler's refusal of a ``job_class`` is about ``--class``)."""
    flag = FLAGS.get(getattr(err, "rule", None) or "")
    return f"{err} ({flag})" if flag else str(err)


def command_help(command: str | None = None) -> str:
    """``%qpu help``: every command's synopsis and what it does in a line; with ``command``
    (``jobs``, ``%%qpu``, ...), its synopsis and whole help."""
    if command is None:
        lines = ['%qpu commands (%qpu help COMMAND tells one; docs/client.md, "Magics"):']
        for synopsis, text in COMMANDS.values():
            lines += [f"  {synopsis}", f"      {text.splitlines()[0]}"]
        return "\n".join(lines)
    if command.lstrip("%") not in COMMANDS:
        raise UsageError(f"no %qpu command {command!r}; %qpu help lists them")
    synopsis, text = COMMANDS[command.lstrip("%")]
    return "\n".join([synopsis, *(f"  {line}" for line in text.splitlines())])


def quota_table(quotas: list[Quota]) -> str:
    """Use against budget, one line per quota, as ``%qpu quotas`` shows them."""
    rows = [("target", "quota", "unit", "used", "budget", "used %", "period", "resets at")]
    for q in quotas:
        share = f"{100 * q.used / q.budget:.0f}%" if q.budget else "-"
        resets = f"{q.resets_at.astimezone(UTC):%Y-%m-%d %H:%MZ}"
        subject = f"{q.kind} {q.subject}"
        rows.append(
            (
                q.target,
                subject,
                UNIT_NAMES.get(q.unit, q.unit),
                f"{q.used:g}",
                f"{q.budget:g}",
                share,
                q.period,
                resets,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


async def _print_progress(job: Job) -> None:
    """One line per change of the job's status or place in the queue, until it ends: what a
    batch run's executed notebook shows where a kernel with a browser shows a panel."""
    seen = (job.state.status, job.state.position)  # the cell has shown this one
    async for state in job.watch():
        if (state.status, state.position) != seen:
            seen = (state.status, state.position)
            print(job, flush=True)


def _stopped_waiting(job: Job) -> MagicError:
    return MagicError(f"qpu: stopped waiting; job {job.id} goes on (%qpu status {job.id})")


def _cell_number(shell: Any) -> int:
    """The number IPython gives the running cell (``In[n]``); the next one outside a cell."""
    running = getattr(shell.displayhook, "exec_result", None)
    return shell.execution_count if running is None else running.execution_count


def _cell_error(shell: Any, err: Exception, filename: str) -> MagicError:
    """``err``, raised by the cell's code (or its syntax), as IPython shows it in a plain
    cell: the traceback from the cell's first frame on."""
    if isinstance(err, SyntaxError):
        lines = shell.SyntaxTB.structured_traceback(type(err), err, [])
    else:
        tb = err.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != filename:
            tb = tb.tb_next
        lines = shell.InteractiveTB.structured_traceback(type(err), err, tb)
    return MagicError(f"{type(err).__name__}: {err}", lines)


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as err:  # unbalanced quotes
        raise UsageError(str(err)) from None


QPUMagics.qpu.__doc__ = f"{QPUMagics.qpu.__doc__}\n\n{command_help()}"  # what %qpu? shows


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext qhpc_lab``: register ``%qpu`` and ``%%qpu``, and have kernels await
    ``%%qpu`` cells. The IRI grammar that ``import pulser`` would build is deferred to its
    first use (``qhpc_lab.programs.sdk_imports``): a second off every kernel's Pulser import."""
    defer_iri_grammar()
    ipython.register_magics(QPUMagics(ipython))
    if await_qpu_cells not in ipython.input_transformers_post:
        ipython.input_transformers_post.append(await_qpu_cells)
