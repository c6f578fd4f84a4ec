"""``%%qpu`` overhead: a cell against calling the engine directly, for the same program.

1. Emulator: ``%%qpu --target emulator`` in an in-process IPython ``InteractiveShell`` (the
   cell evaluated, the envelope built, the client, the emulator target's worker thread, job
   tracking, the Result and its text display) against
   ``qhpc_lab.emulators.run(to_program(sequence, shots))`` in this thread.
2. Scheduler: ``%%qpu --target lab`` against a direct HTTP client — ``POST /jobs``, then the
   job's DONE on an already open ``GET /events`` stream — on the real daemon, ``test`` profile.
3. Kernel: the emulator comparison as cells of a real ipykernel, timed from the
   ``execute_request`` to the kernel's idle: there ``%%qpu`` is awaited and draws a live panel.

Runs alternate A, B, B, A, … so that the shared machine's drift hits both alike; the overhead
is the median (and p90) of the per-pair differences, after a few warm-up pairs. A row of the
direct call against itself shows the noise floor of those differences.

    .venv/bin/python benchmarks/overhead.py [--shots 100] [--repeat 300]
        [--scheduler-repeat 100] [--kernel-repeat 100] [--warmup 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from api import SECRET, percentile, start_daemon
from IPython.core.interactiveshell import InteractiveShell

from qhpc_lab import emulators
from qhpc_lab.client import Client
from qhpc_lab.jupyter.magics import QPUMagics
from qhpc_lab.programs import to_program
from qhpc_lab.scheduler.auth import make_token

UID = 1000


def two_atoms() -> Any:
    """Two atoms 6 µm apart under one 100 ns global pulse (QuTiP runs it in milliseconds)."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    sequence = Sequence(Register.from_coordinates([(-3, 0), (3, 0)], prefix="q"), AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "g")
    return sequence


def paired(
    direct: Callable[[], float], cell: Callable[[], float], repeat: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Seconds of each, ``repeat`` pairs in alternating order, after ``warmup`` pairs."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(warmup + repeat):
        first, second = (direct, cell) if i % 2 else (cell, direct)
        a, b = first(), second()
        if i >= warmup:
            d, c = (a, b) if i % 2 else (b, a)
            times[0].append(d)
            times[1].append(c)
    return times


def clock(action: Callable[[], object]) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        action()
        return time.perf_counter() - start

    return timed


class DirectHTTP:
    """A bare client of the API: one ``/events`` stream kept open, ``POST /jobs``, wait for
    the job's DONE event. Runs on its own loop thread, timed there."""

    def __init__(self, url: str, token: str, body: str) -> None:
        self._body = body
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._http = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=60,
        )
        self._done: dict[str, asyncio.Future[None]] = {}
        self._opened = threading.Event()
        asyncio.run_coroutine_threadsafe(self._follow(), self._loop)
        self._opened.wait(30)

    async def _follow(self) -> None:
        async with self._http.stream("GET", "/events") as response:
            self._opened.set()
            kind = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind == "job":
                    view = json.loads(line[5:])
                    if view["status"] == "DONE":  # maybe before the POST has answered
                        waiter = self._done.setdefault(str(view["id"]), self._loop.create_future())
                        if not waiter.done():
                            waiter.set_result(None)

    async def _submit(self) -> float:
        start = time.perf_counter()
        response = await self._http.post("/jobs", content=self._body)
        job = response.raise_for_status().json()
        await self._done.setdefault(str(job["id"]), self._loop.create_future())
        return time.perf_counter() - start

    def __call__(self) -> float:
        return asyncio.run_coroutine_threadsafe(self._submit(), self._loop).result()


class KernelCell:
    """Cells run in a real ipykernel as a frontend sends them; seconds to the kernel's idle."""

    def __init__(self, env: dict[str, str]) -> None:
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(kernel_name="python3", env=env)

    def timer(self, code: str) -> Callable[[], float]:
        def timed() -> float:
            start = time.perf_counter()
            msg_id = self.client.execute(code)
            while True:
                msg = self.client.get_iopub_msg(timeout=120)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "error":
                    raise RuntimeError("\n".join(msg["content"]["traceback"]))
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return time.perf_counter() - start

        return timed

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


SETUP = """
%load_ext qhpc_lab
from pulser import Pulse, Register, Sequence
from pulser.devices import AnalogDevice
from qhpc_lab import emulators
from qhpc_lab.programs import to_program

sequence = Sequence(Register.from_coordinates([(-3, 0), (3, 0)], prefix="q"), AnalogDevice)
sequence.declare_channel("g", "rydberg_global")
sequence.add(Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "g")
"""


def row(name: str, direct: list[float], cell: list[float]) -> str:
    overhead = [c - d for d, c in zip(direct, cell, strict=True)]
    ms = [
        1000 * statistics.median(direct),
        1000 * statistics.median(cell),
        1000 * statistics.median(overhead),
        1000 * percentile(overhead, 0.9),
    ]
    return f"| {name} | {len(direct)} | " + " | ".join(f"{v:.1f}" for v in ms) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--scheduler-repeat", type=int, default=100)
    parser.add_argument("--kernel-repeat", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    sequence = two_atoms()
    shell = InteractiveShell.instance()
    shell.user_ns["sequence"] = sequence
    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        empty = Path(tmp) / "targets.toml"
        empty.write_text("")
        home = {"HOME": tmp, "QHPC_TARGETS_FILE": str(empty)}

        emulator = Client(environ=home)
        shell.register_magics(QPUMagics(shell, emulator))
        direct = clock(lambda: emulators.run(to_program(sequence, args.shots)))
        cell = clock(
            lambda: shell.run_cell_magic(
                "qpu", f"--target emulator --shots {args.shots}", "sequence"
            )
        )
        rows.append(row("emulator", *paired(direct, cell, args.repeat, args.warmup)))
        # The noise floor: the same comparison with no overhead at all (direct against direct).
        rows.append(row("emulator, direct vs direct", *paired(direct, direct, args.repeat, 0)))
        emulator.close()

        kernel = KernelCell({**os.environ, **home})
        try:
            kernel.timer(SETUP)()
            direct = kernel.timer(f"_ = emulators.run(to_program(sequence, {args.shots}))")
            cell = kernel.timer(f"%%qpu --target emulator --shots {args.shots}\nsequence")
            rows.append(
                row(
                    "kernel, emulator (live panel)",
                    *paired(direct, cell, args.kernel_repeat, args.warmup),
                )
            )
        finally:
            kernel.close()

        process, url = start_daemon(Path(tmp) / "state")
        try:
            token = make_token(SECRET, UID)
            lab = Client(
                environ={
                    **home,
                    "QRMI_JOB_QPU_RESOURCES": "lab",
                    "QRMI_JOB_QPU_TYPES": "pasqal-local",
                    "lab_QRMI_WARDEN_URL": url,
                    "QHPC_TOKEN": token,
                }
            )
            shell.register_magics(QPUMagics(shell, lab))
            body = json.dumps(
                {"sequence": sequence.to_abstract_repr(), "shots": args.shots, "format": "pulser"}
            )
            http = DirectHTTP(url, token, body)
            cell = clock(
                lambda: shell.run_cell_magic(
                    "qpu", f"--target lab --shots {args.shots}", "sequence"
                )
            )
            rows.append(
                row(
                    "scheduler (test profile)",
                    *paired(http, cell, args.scheduler_repeat, args.warmup),
                )
            )
            lab.close()
        finally:
            process.terminate()
            process.wait(10)

    print(f"%%qpu against a direct call, same 2-atom Pulser program, {args.shots} shots; ms\n")
    print("| path | pairs | direct median | %%qpu median | overhead median | overhead p90 |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    load = os.getloadavg()[0]
    print(f"\n1-minute load average at the end: {load:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
