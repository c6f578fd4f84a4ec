"""What JSON logs and traces cost a submission: POST /jobs throughput of the real daemon with
plain text logs (the baseline), with ``--log-format json``, and with traces on
(``--otlp-endpoint`` to a collector in this process that accepts and drops the spans), at
the default sampling ratio and tracing every job.

Each variant is a fresh daemon on the ``test`` profile whose log goes to a file (as a site's
would), sent the same ``--jobs`` one-shot submissions over ``--clients`` connections after a
warm-up; the variants alternate for ``--rounds`` rounds, so that the shared machine's drift
hits all alike. The figure is each variant's median rate over the rounds, and its ratio to
the baseline's.

    .venv/bin/python benchmarks/observability_overhead.py [--jobs 1500] [--clients 10] [--rounds 3]
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

from api import SECRET, load, one_shot_sequence, percentile, start_daemon

from qhpc_lab.scheduler.auth import make_token


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_port}/v1/traces"
    variants = {
        "text logs (baseline)": (),
        "JSON logs": ("--log-format", "json"),
        "traces on, default sampling (0.1)": ("--otlp-endpoint", endpoint),
        "traces on, every job (1.0)": (
            "--otlp-endpoint",
            endpoint,
            "--trace-sampling-ratio",
            "1",
        ),
    }
    body = json.dumps({"sequence": one_shot_sequence(), "shots": 1}).encode()
    token = make_token(SECRET, 1000)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    p99: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, extra in variants.items():
            with tempfile.TemporaryDirectory() as state:
                process, url = start_daemon(Path(state), *extra, log=Path(state) / "daemon.log")
                try:
                    asyncio.run(load(url, token, 1, 20, "POST", "/jobs", body))  # warm-up
                    rate, latencies, failures = asyncio.run(
                        load(url, token, args.clients, args.jobs, "POST", "/jobs", body)
                    )
                    assert failures == 0, f"{name}: {failures} submissions failed"
                finally:
                    process.terminate()
                    process.wait(30)
            rates[name].append(rate)
            p99[name].append(percentile(latencies, 0.99))
    sink.shutdown()
    baseline = statistics.median(rates["text logs (baseline)"])
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(
        f"| variant | POST /jobs per s (median of {args.rounds}) | each round | vs baseline "
        "| p99 ms |"
    )
    print("|---|---|---|---|---|")
    for name in variants:
        rate = statistics.median(rates[name])
        each = ", ".join(f"{r:.0f}" for r in rates[name])
        latency = statistics.median(p99[name]) * 1000
        print(f"| {name} | {rate:.0f} | {each} | {rate / baseline:.2f} | {latency:.0f} |")


if __name__ == "__main__":
    main()
