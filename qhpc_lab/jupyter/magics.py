"""``%qpu`` and ``%%qpu``: each a thin layer over the Python API (one client, last job kept).

``%load_ext qhpc_lab`` registers them; ``%qpu?`` lists the commands. Mistakes (unknown target,
bad option, a program the device refuses) print one line, no traceback; errors raised by the
cell's own code keep theirs. Output goes through :func:`show`, the hook for richer frontends.
"""

from __future__ import annotations

import argparse
import ast
import shlex
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display

from qhpc_lab.client import Client, ClientError, Job, Result, default_client
from qhpc_lab.programs import ProgramError

USAGE = "%qpu targets | use NAME | jobs | status [ID] | result [ID] | cancel ID, or %%qpu"


def show(obj: object) -> None:
    """How the magics present what they produce: the one hook a richer frontend replaces.

    Called with a Job (submitted, ``status``, ``cancel``), a Result, a TargetInfo (``use``)
    or a list of TargetInfo or Job. Plain text: a Result through IPython's display (its
    HTML in notebooks), anything else as its one-line ``str`` per item.
    """
    if isinstance(obj, Result):
        display(obj)
    else:
        print("\n".join(str(item) for item in (obj if isinstance(obj, list) else [obj])))


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
_CELL.add_argument("--no-wait", action="store_true")
_CELL.add_argument("-o", dest="output", metavar="VAR")


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
        """Run programs on QPU targets (docs/client.md).

        %qpu targets                  where programs can run; * marks the default
        %qpu use NAME                 send later cells to NAME
        %%qpu [VARIABLE] [--shots N] [--target T] [--class C] [--name S] [--no-wait] [-o VAR]
                                      run the cell, submit its last expression (or VARIABLE),
                                      wait and show the result; -o stores the Result (the Job
                                      with --no-wait) in VAR
        %qpu jobs                     this kernel's jobs
        %qpu status [ID]              a job's state (default: the last job)
        %qpu result [ID]              wait for a job and show its result
        %qpu cancel ID                cancel a job
        """
        try:
            words = _split(line)
            if cell is None:
                self._line(words)
            else:
                self._cell(_CELL.parse_args(words), cell)
        except (ClientError, ProgramError, TimeoutError, UsageError) as err:
            print(f"qpu: {err}", file=sys.stderr)

    def _line(self, words: list[str]) -> None:
        command, args = (words[0], words[1:]) if words else ("", [])
        arity = {"targets": (0, 0), "use": (1, 1), "jobs": (0, 0), "status": (0, 1)}
        arity.update({"result": (0, 1), "cancel": (1, 1)})
        if command not in arity:
            raise UsageError(f"unknown command {command!r}; use {USAGE}" if command else USAGE)
        low, high = arity[command]
        if not low <= len(args) <= high:
            raise UsageError(f"%qpu {command} takes {high or 'no'} argument{'s' * (high != 1)}")
        client = self.client
        if command == "targets":
            show(client.targets())
        elif command == "use":
            show(client.use(args[0]))
        elif command == "jobs":
            jobs = client.jobs()
            for job in jobs:
                job.refresh()
            if not jobs:
                print("no job submitted from this kernel yet")
            else:
                show(jobs)
        elif command == "status":
            job = client.job(*args)
            job.refresh()
            show(job)
        elif command == "result":
            self._wait(client.job(*args))
        else:
            job = client.job(*args)
            job.cancel()
            show(job)

    def _cell(self, options: argparse.Namespace, cell: str) -> None:
        program = self._evaluate(cell, options.variable)
        job = self.client.submit(
            program, options.shots, options.target, options.job_class, options.name
        )
        show(job)
        outcome = job if options.no_wait else self._wait(job)
        if options.output and outcome is not None:
            self.shell.user_ns[options.output] = outcome

    def _wait(self, job: Job) -> Result | None:
        try:
            result = job.result()
        except KeyboardInterrupt:
            print(f"qpu: stopped waiting; job {job.id} goes on (%qpu status {job.id})")
            return None
        show(result)
        return result

    def _evaluate(self, cell: str, variable: str | None) -> Any:
        """Run the cell in the user namespace; its last expression, or ``variable``."""
        source = self.shell.transform_cell(cell)
        tree = ast.parse(source)
        last = None
        if variable is None and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = tree.body.pop()
        filename = self.shell.compile.cache(source, self.shell.execution_count)
        namespace = self.shell.user_ns
        exec(compile(tree, filename, "exec"), namespace)
        if variable is not None:
            if variable not in namespace:
                raise UsageError(f"the cell left no variable named {variable!r} to submit")
            return namespace[variable]
        if last is None:
            raise UsageError(
                "the cell must end with the program to submit, or name it: %%qpu VARIABLE"
            )
        return eval(compile(ast.Expression(last.value), filename, "eval"), namespace)


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as err:  # unbalanced quotes
        raise UsageError(str(err)) from None


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext qhpc_lab``: register ``%qpu`` and ``%%qpu``."""
    ipython.register_magics(QPUMagics(ipython))
