"""Re-run every tutorial from one ``make lab`` start and store its outputs (``make tutorials``).

Starts what ``make lab`` starts — the emulated QPU (``qhpc qpu serve``, the ``demo`` profile)
behind Pasqal's QPU API, the scheduler driving it in chunks of 1 s, a targets file naming it
``local`` — on ``make lab``'s ports (what the targets panel shows) in a fresh state folder (a
running ``make lab``'s is left alone; its ports are not: stop it, or pass other ports), then
executes ``notebooks/0*.ipynb`` in order, each in the kernel its metadata names, with the kernel
environment a Lab started by ``make lab`` gives (no Slurm or QRMI variables of the caller's).
The stored outputs thus tell one story: one device, one calibration clock, job ids as a new
user sees them. Nothing is written unless every notebook ran (a cell tagged
``raises-exception`` may fail; any other error stops the run, naming the notebook and cell).
Execution timings, widget state and absolute paths are not stored; a cell the README quotes
with its output gets this run's output there too. The services are stopped by pid when the
run ends, fails, or gets Ctrl-C, SIGTERM or SIGHUP (not SIGKILL: nothing can catch it).

    .venv/bin/python scripts/rerun_tutorials.py [--profile demo] [--port 8006] [--qpu-port 8090]
                                                [NOTEBOOK ...]

Naming notebooks re-runs only those, to try a change; commit a whole run (tests/test_notebooks.py
checks that the stored outputs read as one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
QHPC = Path(sys.executable).with_name("qhpc")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
"""A live panel's output: its state lives in the kernel that ran it, so only its text and HTML
renderings are stored (what nbval and GitHub show)."""
CELL_TIMEOUT_S = 600
STOP_TIMEOUT_S = 10
START_TIMEOUT_S = 180
LOCAL = ("--host", "127.0.0.1")


def taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def check_free(port: int, variable: str, option: str) -> None:
    """SystemExit naming a free port when ``port`` is taken (``make lab`` says the same)."""
    if not taken(port):
        return
    free = next(p for p in range(8010, 8100) if not taken(p))
    sys.exit(
        f"rerun-tutorials: port {port} is taken (a make lab running?): "
        f"make tutorials {variable}={free} (this script: {option} {free})"
    )


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``args`` in its own session (a Ctrl-C reaches this script first), output to ``log``."""
    with log.open("wb") as handle:
        return subprocess.Popen(
            args, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, SIGKILL after :data:`STOP_TIMEOUT_S`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_answering(url: str, services: dict[str, tuple[subprocess.Popen[bytes], Path]]) -> None:
    """Until ``url`` answers 200; SystemExit with the log of a service that exited first. The
    QPU is waited for before the scheduler starts: on a loaded machine its start can outlast
    the scheduler's 30 s of retries to read the device's specs."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, (process, log) in services.items():
            if process.poll() is not None:
                sys.exit(f"{log.read_text()}\nrerun-tutorials: the {name} did not start ({log})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    sys.exit(f"rerun-tutorials: no answer from {url} in {START_TIMEOUT_S} s")


@contextlib.contextmanager
def lab_services(profile: str, port: int, qpu_port: int, state: Path) -> Iterator[Path]:
    """The emulated QPU and the scheduler as ``make lab`` starts them; yields the targets file
    that names the scheduler ``local``, as ``make lab``'s does."""
    env = {**os.environ, "QHPC_STATE_DIR": str(state)}
    qpu_url, url = f"http://127.0.0.1:{qpu_port}", f"http://127.0.0.1:{port}"
    token = subprocess.run(
        [QHPC, "scheduler", "token", "--uid", str(os.getuid()), "--ttl", "1d"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    targets = state / "targets.toml"
    targets.write_text(
        f'default = "local"\n[targets.local]\ntype = "scheduler"\nurl = "{url}"\n'
        f'token = "{token}"\n'
    )
    services: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        services["emulated QPU"] = (
            start(
                [QHPC, "qpu", "serve", "--profile", profile, *LOCAL, "--port", str(qpu_port)],
                env,
                state / "qpu.log",
            ),
            state / "qpu.log",
        )
        wait_answering(f"{qpu_url}/api/v1/system/operational", services)
        services["scheduler"] = (
            start(
                [QHPC, "scheduler", "serve", "--qpu-url", qpu_url, *LOCAL, "--port", str(port)],
                {**env, "QHPC_QPU_CHUNK_SECONDS": "1"},
                state / "scheduler.log",
            ),
            state / "scheduler.log",
        )
        wait_answering(f"{url}/health", services)
        print(f"rerun-tutorials: scheduler at {url}, emulated QPU ({profile}) at {qpu_url}")
        yield targets
    finally:
        for process, _ in reversed(services.values()):
            stop(process)
        print("rerun-tutorials: scheduler and QPU stopped")


def kernel_environment(targets: Path) -> dict[str, str]:
    """A kernel's environment under ``make lab``: the caller's without QPU discovery of its
    own (Slurm, QRMI, QHPC variables), plus the targets file."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("QRMI_", "SLURM_", "SGE_", "QHPC_")) and "_QRMI_" not in key
    }
    env["QHPC_TARGETS_FILE"] = str(targets)
    return env


def execute(path: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """The notebook at ``path`` run top to bottom in its own kernel, from its folder."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name=notebook.metadata.kernelspec.name,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=env)
    return notebook


def stored(notebook: nbformat.NotebookNode, paths: dict[str, str]) -> nbformat.NotebookNode:
    """``notebook`` as it is committed: no widget state or live panel views, no execution
    timings, each absolute path of ``paths`` replaced by its placeholder."""
    notebook.metadata.pop("widgets", None)
    pattern = re.compile("|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True)))

    def relative(text: str) -> str:
        return pattern.sub(lambda found: paths[found.group(0)], text)

    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
            if "text" in output:
                output.text = relative(output.text)
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    output.data[mime] = relative(value)
            if "traceback" in output:
                output.traceback = [relative(line) for line in output.traceback]
            if "evalue" in output:
                output.evalue = relative(output.evalue)
    return notebook


QUOTE = re.compile(r"```python\n(.*?)\n```\n\n```text\n(.*?)\n```", re.DOTALL)
"""A cell quoted in the README, and below it what it printed."""


def quote_outputs(page: Path, notebooks: list[nbformat.NotebookNode]) -> None:
    """Each cell that ``page`` quotes from a tutorial followed by its output gets the output
    this run stored (the README's quick start shows a ``%%qpu`` cell of 02 and its result)."""
    printed = {}
    for notebook in notebooks:
        for cell in notebook.cells:
            texts = [
                o.get("text") or o.get("data", {}).get("text/plain")
                for o in cell.get("outputs", [])
            ]
            if cell.cell_type == "code" and texts and all(texts):
                printed.setdefault(cell.source.strip(), "\n".join(t.rstrip("\n") for t in texts))

    def requote(found: re.Match[str]) -> str:
        output = printed.get(found.group(1).strip())
        if output is None:
            return found.group(0)
        return f"```python\n{found.group(1)}\n```\n\n```text\n{output}\n```"

    page.write_text(QUOTE.sub(requote, page.read_text(encoding="utf-8")), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(prog="rerun-tutorials", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo", help="the emulated QPU's profile")
    parser.add_argument("--port", type=int, default=8006, help="the scheduler's (QHPC_PORT)")
    parser.add_argument("--qpu-port", type=int, default=8090, help="the QPU's (QHPC_QPU_PORT)")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/0*.ipynb")
    options = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress lines as they happen, into a log too
    check_free(options.port, "QHPC_PORT", "--port")
    check_free(options.qpu_port, "QHPC_QPU_PORT", "--qpu-port")
    notebooks = [p.resolve() for p in options.notebooks] or sorted(NOTEBOOKS.glob("0*.ipynb"))
    for number in (signal.SIGTERM, signal.SIGHUP):  # end through the finally blocks
        signal.signal(number, lambda received, _: sys.exit(128 + received))
    executed: dict[Path, nbformat.NotebookNode] = {}
    with tempfile.TemporaryDirectory(prefix="qhpc-tutorials-") as folder:
        state = Path(folder)
        paths = {
            folder: "$QHPC_STATE_DIR",
            str(NOTEBOOKS): ".",
            str(ROOT): "..",
            sys.prefix: ".venv",
            str(Path.home()): "~",
        }
        with lab_services(options.profile, options.port, options.qpu_port, state) as targets:
            env = kernel_environment(targets)
            for path in notebooks:
                began = time.monotonic()
                try:
                    executed[path] = stored(execute(path, env), paths)
                except CellExecutionError as failure:
                    sys.exit(f"{failure}\nrerun-tutorials: {path.name} failed; nothing written")
                print(f"rerun-tutorials: {path.name} ran in {time.monotonic() - began:.0f} s")
    for path, notebook in executed.items():
        nbformat.write(notebook, path)
    quote_outputs(ROOT / "README.md", list(executed.values()))
    print(f"rerun-tutorials: wrote {len(executed)} notebooks and the README's quoted outputs")


if __name__ == "__main__":
    main()
