"""This checkout against a previous release in one run: submissions, dispatch, queue events.

Two daemons, this checkout's and a baseline commit's (checked out into a temporary git
worktree and run from there), loaded alike by this process, round after round in alternation
so that whatever else loads the machine weighs on both. Per round and side:

- ``benchmarks/api.py``'s load: submissions/s and p99 at each ``--clients`` (token auth,
  SQLite, one-shot 2-atom jobs) and submit → RUNNING on an idle QPU (server and client side);
- ``benchmarks/queue_latency.py``'s queue event: another user's submission to this user's
  ``job.watch()`` moving (p50).

It prints each figure's median over the rounds per side and the ratio this / baseline (above 1
is faster for rates, slower for times), then the load average. A ratio that moves by more than
the spread between rounds is a change; a single round is not. Not a test: it asserts nothing.

    .venv/bin/python benchmarks/release.py [--baseline COMMIT] [--rounds 3] [--jobs 400]
        [--clients 10,50] [--idle-samples 20] [--queue-samples 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from api import SECRET, idle_dispatch, load, one_shot_sequence, start_daemon, wait_until_idle
from api import percentile as quantile
from queue_latency import measure as queue_events

from qhpc_lab.scheduler.auth import make_token

BASELINE = "04aad20"
"""The release compared with by default: the last one that landed (update it when one does)."""
ROOT = Path(__file__).resolve().parent.parent


def side_figures(source: Path, args: argparse.Namespace) -> dict[str, float]:
    """One round of every figure against the daemon of ``source``."""
    body = json.dumps({"sequence": one_shot_sequence(), "shots": 1}).encode()
    token = make_token(SECRET, 1000)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as state:
        process, url = start_daemon(Path(state), env={"PYTHONPATH": str(source)})
        try:
            asyncio.run(load(url, token, 1, 20, "POST", "/jobs", body))  # warm-up
            for clients in (int(c) for c in args.clients.split(",")):
                wait_until_idle(url)
                rate, latencies, _ = asyncio.run(
                    load(url, token, clients, args.jobs, "POST", "/jobs", body)
                )
                figures[f"submissions/s at {clients} clients"] = rate
                figures[f"submit p99 ms at {clients} clients"] = 1000 * quantile(latencies, 0.99)
            wait_until_idle(url)
            idle = asyncio.run(idle_dispatch(url, token, body, args.idle_samples))
            for where, values in idle.items():
                if values:
                    figures[f"submit→RUNNING p50 ms ({where})"] = 1000 * statistics.median(values)
            wait_until_idle(url)
            events = asyncio.run(queue_events(url, args.queue_samples))
            figures["queue event → watch() p50 ms"] = 1000 * statistics.median(events["stream"])
        finally:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:  # at load average 20-30 a shutdown took longer
                process.kill()
                process.wait(10)
    return figures


def baseline_tree(commit: str, into: Path) -> Path:
    """``commit`` checked out (detached) in a temporary worktree of this repository."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(into), commit],
        check=True,
        capture_output=True,
    )
    return into


def report(rounds: dict[str, list[dict[str, float]]], labels: dict[str, str]) -> None:
    this, base = (rounds[side] for side in ("this", "baseline"))
    print(f"\n| figure | {labels['this']} | {labels['baseline']} | ratio this/baseline |")
    print("|---|---:|---:|---:|")
    for name in this[0]:
        mine = statistics.median(r[name] for r in this if name in r)
        theirs = statistics.median(r[name] for r in base if name in r)
        spread = _spread([r[name] for r in this if name in r])
        print(f"| {name} | {mine:.1f} ±{spread:.0f}% | {theirs:.1f} | {mine / theirs:.2f} |")
    print(f"\nload average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _spread(values: list[float]) -> float:
    """Half the range between rounds, in percent of the median."""
    middle = statistics.median(values)
    return 50 * (max(values) - min(values)) / middle if middle else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help=f"commit (default {BASELINE})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--clients", default="10,50")
    parser.add_argument("--idle-samples", type=int, default=20)
    parser.add_argument("--queue-samples", type=int, default=10)
    args = parser.parse_args()
    head = _describe("HEAD")
    labels = {"this": f"this ({head})", "baseline": f"baseline ({_describe(args.baseline)})"}
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rounds: dict[str, list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as scratch:
        tree = baseline_tree(args.baseline, Path(scratch) / "baseline")
        try:
            sides: dict[str, Callable[[], dict[str, float]]] = {
                "this": lambda: side_figures(ROOT, args),
                "baseline": lambda: side_figures(tree, args),
            }
            for number in range(args.rounds):
                order = ("this", "baseline") if number % 2 == 0 else ("baseline", "this")
                for side in order:
                    rounds[side].append(sides[side]())
                    print(f"round {number + 1}, {labels[side]}: done", file=sys.stderr)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
            )
    report(rounds, labels)


def _describe(commit: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h", commit], capture_output=True, text=True
    )
    return done.stdout.strip() or commit


if __name__ == "__main__":
    main()
