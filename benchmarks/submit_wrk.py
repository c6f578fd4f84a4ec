"""Submissions/s under wrk: bearer token and MUNGE on SQLite, bearer token on PostgreSQL.

The load of issue 26's aims: ``wrk -t1 -c50`` sending one-shot, 2-atom Pulser jobs to
``POST /jobs`` of the real daemon (``benchmarks/api.py``'s ``start_daemon``, ``test``
profile), a fresh daemon and database per mode and round, for ``--seconds`` (at the aims'
rates, thousands of submissions; the table says how many were answered).
wrk costs almost nothing per request, so on two shared cores it measures the daemon, not
itself. A Lua script sends the body; for MUNGE, credentials are made before the load, one per
request (a credential is refused when replayed), by the uid running this (made a plain user:
``admin_uids`` names nobody). PostgreSQL is a throw-away server started as the tests start
theirs (``tests/support/postgres.py``: root, Debian's binaries); MUNGE needs the system
munged (``tests/support/munge.py`` starts it as root; the daemon takes ``munge,token``, the
warm-up's 20 submissions coming with a token).

With ``--baseline COMMIT`` the same load runs against that commit's daemon too (a temporary
git worktree, as ``benchmarks/release.py``), alternating per round. With ``--profile DIR``
py-spy (``record --threads --idle --nonblocking``, raw stacks) records the daemon through each
load: without ``--nonblocking`` it stops the daemon's ~50 threads for every sample, which on
two loaded cores cut the rate tenfold.

    nice .venv/bin/python benchmarks/submit_wrk.py [--seconds 5] [--rounds 3]
        [--modes token,munge,postgresql] [--baseline COMMIT] [--profile DIR]

Needs wrk (Debian: ``apt-get install -y wrk``, version 4.1). Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from api import SECRET, load, one_shot_sequence, start_daemon
from release import ROOT, baseline_tree

from qhpc_lab import munge
from qhpc_lab.scheduler.auth import make_token

CLIENTS = 50
MODES = ("token", "munge", "postgresql")
WRK_INSTALL = "wrk is not installed: `apt-get install -y wrk` (Debian's wrk 4.1), then rerun"
PY_SPY = Path(sys.executable).parent / "py-spy"
CREDENTIALS_PER_S = 2500
"""MUNGE credentials made per second of load: more than the daemon answers (one each)."""

LUA = r"""
local body, token, creds, sent = nil, nil, {}, 0
function init(args)
  local f = io.open(args[1], "rb"); body = f:read("*a"); f:close()
  token = args[2]
  if args[3] then for line in io.lines(args[3]) do creds[#creds + 1] = line end end
end
function request()
  sent = sent + 1
  local headers = {["Content-Type"] = "application/json"}
  if #creds > 0 then headers["X-Munge-Cred"] = creds[sent]
  else headers["Authorization"] = "Bearer " .. token end
  return wrk.format("POST", "/jobs", headers, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_binary() -> str:
    """wrk's path, or exit saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(WRK_INSTALL)
    return path


def run_wrk(
    url: str, seconds: int, scratch: Path, credentials: list[str] | None
) -> dict[str, float]:
    """Submissions for ``seconds`` from ``CLIENTS`` wrk connections: how many, the rate,
    p50/p99 ms, failures (answers other than 2xx, and socket errors)."""
    script, body = scratch / "submit.lua", scratch / "body.json"
    script.write_text(LUA)
    body.write_text(json.dumps({"sequence": one_shot_sequence(), "shots": 1}))
    args = [str(body), make_token(SECRET, 1000)]
    if credentials is not None:
        creds = scratch / "credentials.txt"
        creds.write_text("\n".join(credentials) + "\n")
        args.append(str(creds))
    command = [wrk_binary(), "-t1", f"-c{CLIENTS}", f"-d{seconds}s", "--timeout", "30s"]
    done = subprocess.run(
        [*command, "-s", str(script), url, "--", *args], capture_output=True, text=True
    )
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", done.stdout)
    if found is None:
        raise RuntimeError(f"wrk gave no result ({done.returncode}): {done.stdout}{done.stderr}")
    requests, duration_us, p50_us, p99_us, failures = map(int, found.groups())
    return {
        "submissions": requests,
        "submissions/s": requests / (duration_us / 1e6),
        "p50 ms": p50_us / 1000,
        "p99 ms": p99_us / 1000,
        "failures": failures,
    }


@contextlib.contextmanager
def profiled(pid: int, output: Path | None) -> Iterator[None]:
    """py-spy recording ``pid`` (every thread, idle ones too) while the block runs."""
    if output is None:
        yield
        return
    options = ["--threads", "--idle", "--nonblocking", "-r", "200", "-f", "raw", "-o", str(output)]
    spy = subprocess.Popen(
        [str(PY_SPY), "record", *options, "--pid", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


def one_round(
    source: Path, mode: str, args: argparse.Namespace, db_url: str | None, profile: Path | None
) -> dict[str, float]:
    """One fresh daemon of ``source`` in ``mode`` under the wrk load."""
    env = {"PYTHONPATH": str(source), "QHPC_ADMIN_UIDS": "nobody"}
    if mode == "munge":
        env.update(QHPC_AUTH="munge,token", QHPC_REQUIRE_SESSION="false")
    if db_url is not None:
        env["QHPC_DB"] = db_url
    token = make_token(SECRET, 1000)
    body = json.dumps({"sequence": one_shot_sequence(), "shots": 1}).encode()
    with tempfile.TemporaryDirectory() as state:
        process, url = start_daemon(Path(state), env=env)
        try:
            # warm-up through a token: the validation of this sequence, imports
            asyncio.run(load(url, token, 1, 20, "POST", "/jobs", body))
            credentials = None
            if mode == "munge":
                made = args.seconds * CREDENTIALS_PER_S
                credentials = [munge.encode() for _ in range(made)]
            daemon = psutil.Process(process.pid)
            cpu = sum(daemon.cpu_times()[:2])
            with profiled(process.pid, profile):
                figures = run_wrk(url, args.seconds, Path(state), credentials)
            cpu = sum(daemon.cpu_times()[:2]) - cpu
            figures["CPU ms"] = 1000 * cpu / max(1, figures["submissions"])
            return figures
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """The daemon stopped: SIGTERM, then SIGKILL if it is still there after a minute (at load
    average 20-30 its shutdown alone took longer than 30 s)."""
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def databases(modes: list[str]) -> Iterator[Iterator[str | None]]:
    """Fresh database URLs for each round of ``modes``: PostgreSQL's from one throw-away
    server (a new database per round), SQLite's None (the daemon's state folder)."""
    if "postgresql" not in modes:
        yield iter(lambda: None, 0)
        return
    from tests.support.postgres import fresh_database, running_server

    with running_server() as server, contextlib.ExitStack() as stack:

        def fresh() -> str:
            return stack.enter_context(fresh_database(server))

        yield iter(fresh, 0)


@contextlib.contextmanager
def munged(modes: list[str]) -> Iterator[None]:
    """The system munged, started (as root) when MUNGE is measured and none answers."""
    if "munge" not in modes:
        yield
        return
    from tests.support.munge import system_munged

    with system_munged():
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="of load per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--baseline", help="a commit to measure in the same run")
    parser.add_argument("--profile", type=Path, help="a folder for py-spy's raw stacks")
    args = parser.parse_args()
    wrk_binary()
    modes = args.modes.split(",")
    results: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    before = os.getloadavg()
    print(f"load average before: {', '.join(f'{x:.2f}' for x in before)}", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        sides = {"this": ROOT}
        if args.baseline:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            sides["baseline"] = baseline_tree(args.baseline, scratch / "baseline")
            stack.callback(
                subprocess.run,
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(sides["baseline"])],
                capture_output=True,
            )
        urls = stack.enter_context(databases(modes))
        stack.enter_context(munged(modes))
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        for number in range(args.rounds):
            order = list(sides) if number % 2 == 0 else list(reversed(sides))
            for side in order:
                for mode in modes:
                    db_url = next(urls) if mode == "postgresql" else None
                    profile = None
                    if args.profile:
                        profile = args.profile / f"{side}-{mode}-{number + 1}.txt"
                    try:
                        figures = one_round(sides[side], mode, args, db_url, profile)
                    except RuntimeError as failed:  # a daemon that did not start, under load
                        print(f"round {number + 1} {side} {mode}: {failed}", file=sys.stderr)
                        continue
                    results[(side, mode)].append(figures)
                    print(f"round {number + 1} {side} {mode}: {figures}", file=sys.stderr)
    report(results, args, before)


def report(
    results: dict[tuple[str, str], list[dict[str, float]]],
    args: argparse.Namespace,
    before: tuple[float, float, float],
) -> None:
    print(f"\nwrk -t1 -c{CLIENTS} -d{args.seconds}s, one-shot 2-atom submissions\n")
    print(
        "| tree | mode | submissions/s (rounds) | median | p99 ms (rounds) | median "
        "| daemon CPU ms per submission (rounds) | answered | failures |"
    )
    print("|---|---|---|---:|---|---:|---|---:|---:|")
    medians: dict[tuple[str, str], float] = {}
    for (side, mode), rounds in results.items():
        rates = [r["submissions/s"] for r in rounds]
        p99s = [r["p99 ms"] for r in rounds]
        cpus = [r["CPU ms"] for r in rounds]
        medians[(side, mode)] = statistics.median(rates)
        print(
            f"| {side} | {mode} | {', '.join(f'{x:.0f}' for x in rates)} | "
            f"{statistics.median(rates):.0f} | {', '.join(f'{x:.0f}' for x in p99s)} | "
            f"{statistics.median(p99s):.0f} | {', '.join(f'{x:.2f}' for x in cpus)} | "
            f"{sum(int(r['submissions']) for r in rounds)} | "
            f"{sum(int(r['failures']) for r in rounds)} |"
        )
    for side in sorted({side for side, _ in results}):
        if (side, "postgresql") in medians and (side, "token") in medians:
            ratio = medians[(side, "postgresql")] / medians[(side, "token")]
            print(f"\n{side}: PostgreSQL / SQLite (token) = {ratio:.2f}")
    after = os.getloadavg()
    print(
        f"\nload average before {', '.join(f'{x:.2f}' for x in before)}; "
        f"after {', '.join(f'{x:.2f}' for x in after)}"
    )


if __name__ == "__main__":
    main()
