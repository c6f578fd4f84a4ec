"""What JSON logs and traces cost a submission: POST /jobs throughput of the real daemon, and
the daemon's CPU per submission, with plain text logs (the baseline), with
``--log-format json``, and with traces on (``--otlp-endpoint`` to a collector in this process
that accepts and drops the spans), at the default sampling ratio and tracing every job.

Each variant is a fresh daemon on the ``test`` profile whose log goes to a file (as a site's
would), sent the same ``--jobs`` one-shot submissions over ``--clients`` connections after a
warm-up; the variants alternate for ``--rounds`` rounds, so that the shared machine's drift
hits all alike. The daemon's CPU time (user + system, psutil) over the submissions, divided by
their number, is the steadier figure on a busy machine: the rate depends on what else runs.
``--compare-tree DIR`` adds the traced variants run from another checkout's code (the same
flags, the daemon started in ``DIR``), for a before/after in one run. Run it ``nice``d.

    nice .venv/bin/python benchmarks/observability_overhead.py [--jobs 600] [--clients 50] \
        [--rounds 3] [--compare-tree ../main]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
from api import SECRET, load, one_shot_sequence, percentile, start_daemon

from qhpc_lab.scheduler.auth import make_token

BASELINE = "text logs (baseline)"


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


Variant = tuple[tuple[str, ...], Path | None]


def _variants(endpoint: str, compare_tree: Path | None) -> dict[str, Variant]:
    """Each variant's flags, and the checkout it runs from (None: this one)."""
    default = ("--otlp-endpoint", endpoint)
    every = (*default, "--trace-sampling-ratio", "1")
    variants: dict[str, Variant] = {
        BASELINE: ((), None),
        "JSON logs": (("--log-format", "json"), None),
        "traces on, default sampling (0.1)": (default, None),
        "traces on, every job (1.0)": (every, None),
    }
    if compare_tree is not None:
        variants[f"traces on (0.1), {compare_tree}"] = (default, compare_tree.resolve())
        variants[f"traces on (1.0), {compare_tree}"] = (every, compare_tree.resolve())
    return variants


def _round(
    variant: Variant, token: str, body: bytes, clients: int, jobs: int
) -> tuple[float, float, float]:
    """One fresh daemon's (submissions/s, p99 s, CPU s per submission)."""
    flags, tree = variant
    with tempfile.TemporaryDirectory() as state:
        log = Path(state) / "daemon.log"
        process, url = start_daemon(Path(state), *flags, log=log, cwd=tree)
        try:
            asyncio.run(load(url, token, 1, 20, "POST", "/jobs", body))  # warm-up
            daemon = psutil.Process(process.pid)
            cpu = sum(daemon.cpu_times()[:2])
            rate, latencies, failures = asyncio.run(
                load(url, token, clients, jobs, "POST", "/jobs", body)
            )
            cpu = sum(daemon.cpu_times()[:2]) - cpu
            assert failures == 0, f"{flags}, {tree}: {failures} submissions failed"
        finally:
            process.terminate()
            process.wait(30)
    return rate, percentile(latencies, 0.99), cpu / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-tree", type=Path, default=None)
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    variants = _variants(f"http://127.0.0.1:{sink.server_port}/v1/traces", args.compare_tree)
    body = json.dumps({"sequence": one_shot_sequence(), "shots": 1}).encode()
    token = make_token(SECRET, 1000)
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, variant in variants.items():
            figures[name].append(_round(variant, token, body, args.clients, args.jobs))
    sink.shutdown()
    loads = " → ".join(" ".join(f"{x:.1f}" for x in avg) for avg in (load_before, os.getloadavg()))
    print(f"load average (1, 5, 15 min) {loads}; {args.jobs} submissions a round")
    base_rate = statistics.median(rate for rate, _, _ in figures[BASELINE])
    base_cpu = statistics.median(cpu for _, _, cpu in figures[BASELINE])
    print(
        "| variant | submissions/s (rounds) | median | vs baseline "
        "| daemon CPU ms per submission (rounds) | median | vs baseline | p99 ms (median) |"
    )
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for name, rounds in figures.items():
        rates, p99s, cpus = zip(*rounds, strict=True)
        rate, cpu = statistics.median(rates), statistics.median(cpus)
        print(
            f"| {name} | {', '.join(f'{r:.0f}' for r in rates)} | {rate:.0f} "
            f"| {rate / base_rate:.2f} | {', '.join(f'{c * 1e3:.2f}' for c in cpus)} "
            f"| {cpu * 1e3:.2f} | {cpu / base_cpu:.2f} | {statistics.median(p99s) * 1e3:.0f} |"
        )


if __name__ == "__main__":
    main()
