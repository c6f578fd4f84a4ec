"""Prometheus text exposition for the scheduler (no global registry: one per daemon)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable

WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class Histogram:
    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, cumulative = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        out += [
            f'{name}_bucket{{le="+Inf"}} {self.n}',
            f"{name}_sum {self.total}",
            f"{name}_count {self.n}",
        ]
        return out


class Metrics:
    def __init__(self) -> None:
        self.submissions: dict[str, int] = defaultdict(int)
        self.finished: dict[str, int] = defaultdict(int)
        self.rejected = 0
        self.store_errors = 0
        self.qpu_busy_seconds = 0.0
        self.calibrations = 0
        self.shots = 0
        self.wait_seconds = Histogram(WAIT_BUCKETS)

    def render(
        self,
        queue_depth: dict[str, int],
        jobs_by_state: dict[str, int],
        device_state: str,
        calibration_age_s: float,
    ) -> str:
        def family(name: str, kind: str, doc: str) -> list[str]:
            return [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]

        lines = family("qhpc_queue_depth", "gauge", "Jobs waiting or running, by class.")
        lines += [
            f'qhpc_queue_depth{{job_class="{c}"}} {n}' for c, n in sorted(queue_depth.items())
        ]
        lines += family("qhpc_jobs", "gauge", "Jobs in the store by state.")
        lines += [f'qhpc_jobs{{state="{s}"}} {n}' for s, n in sorted(jobs_by_state.items())]
        lines += family("qhpc_submissions_total", "counter", "Accepted job submissions by class.")
        lines += [
            f'qhpc_submissions_total{{job_class="{c}"}} {n}'
            for c, n in sorted(self.submissions.items())
        ]
        lines += family("qhpc_rejected_submissions_total", "counter", "Refused submissions.")
        lines.append(f"qhpc_rejected_submissions_total {self.rejected}")
        lines += family("qhpc_jobs_finished_total", "counter", "Jobs reaching a final state.")
        lines += [
            f'qhpc_jobs_finished_total{{status="{s}"}} {n}'
            for s, n in sorted(self.finished.items())
        ]
        lines += family("qhpc_store_errors_total", "counter", "Failed database calls.")
        lines.append(f"qhpc_store_errors_total {self.store_errors}")
        lines += family("qhpc_qpu_busy_seconds_total", "counter", "Seconds the QPU ran shots.")
        lines.append(f"qhpc_qpu_busy_seconds_total {self.qpu_busy_seconds}")
        lines += family("qhpc_shots_total", "counter", "Shots executed.")
        lines.append(f"qhpc_shots_total {self.shots}")
        lines += family("qhpc_calibrations_total", "counter", "Calibrations performed.")
        lines.append(f"qhpc_calibrations_total {self.calibrations}")
        lines += family("qhpc_device_state", "gauge", "1 for the device's current state.")
        lines += [
            f'qhpc_device_state{{state="{s}"}} {int(s == device_state)}'
            for s in ("ONLINE", "CALIBRATING", "MAINTENANCE", "OFFLINE")
        ]
        lines += family("qhpc_calibration_age_seconds", "gauge", "Seconds since calibration.")
        lines.append(f"qhpc_calibration_age_seconds {calibration_age_s}")
        lines += family("qhpc_job_wait_seconds", "histogram", "Submission to first shot.")
        lines += self.wait_seconds.lines("qhpc_job_wait_seconds")
        return "\n".join(lines) + "\n"
