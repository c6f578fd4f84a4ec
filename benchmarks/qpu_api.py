"""The QPU API driver against the in-process emulated QPU: per-chunk cost, idle gaps, utilisation.

All in one run, each figure a comparison within it (the machine is shared):

1. Per-chunk scheduler overhead. The same chunks of 100 shots on the ``test`` profile (0.5 ms a
   shot: 50 ms of device time a chunk) through an in-process scheduler with ``EmulatedQPU``
   and through one with ``QPUApiDriver`` against ``qhpc qpu serve --profile test --setup 0``
   in a subprocess, at three queue shapes: one job of ``--chunks`` chunks (of 100 shots: a
   driver that sizes its chunks larger runs fewer, so a second job waits behind it),
   ``--depth`` jobs of one chunk each (each chunk ends a job; the queue shrinks from
   ``--depth``) and ``--depth`` jobs of 10 chunks (the queue stays near ``--depth``). A run
   is timed from its first chunk's ``run_chunk`` call to its ``--chunks``-th call:
   ``--chunks`` − 1 whole cycles, each chunk's recording included. Overhead per chunk =
   (that wall time − the cycles' shots × 0.5 ms) / cycles, split into the time inside
   ``run_chunk`` beyond the shots (driver, HTTP, device) and outside it (the scheduler:
   record the chunk, decide, mark the next one running). ``--rounds`` rounds, the drivers'
   order alternating from one round to the next.
2. Idle gap between consecutive QPU jobs, from the same runs. Device side, from the device's
   own timestamps (``GET /stand-in/jobs``): created(i+1) − end(i). Scheduler side, from the
   driver's ``_request`` wrapped in a subclass: the moment the answer ``DONE`` of job i
   arrived to the moment ``POST /jobs`` of job i+1 was sent, split at ``_outcome``'s return,
   ``run_chunk``'s call and ``_create``'s entry; the store's writes in it are timed in the
   store's thread. The device-side gap also holds the polling latency (end → DONE read) and
   the POST's way to the device (→ created).
3. Utilisation with a real per-job setup, the ``fresnel-like`` workload time-compressed
   ``--compress`` times (0.33 s a shot → 3.3 ms, 20 s chunks → 0.2 s, no calibration during
   the run): a profile JSON written to a temporary directory, served with its ``job_setup_s`` /
   ``--compress``. A slice of ``--jobs`` jobs of ``benchmarks/traces.py``'s trace (seed 7,
   8 h: the classes, users and shot counts of its campaigns, variational loops and CI tests,
   each class in proportion to its share of the trace's jobs, the earliest of each), all
   submitted up front (a busy queue; arrival and think times ignored). Utilisation, setup
   excluded = Σ(end − start) / (last end − first created − Σ(start − created)); setup
   included = Σ(end − start) / (last end − first created). The in-process driver runs the
   same slice for comparison (shot time / span of its chunks).

The stand-in runs one QPU job of its own first (its emulator worker warm). Before each
measured run, one warm-up job runs through the scheduler (the emulator worker started, the API
driver's first timing measured), then the scheduler is drained, the jobs submitted and
dispatch resumed.

    .venv/bin/python benchmarks/qpu_api.py [--chunks 100] [--depth 200] [--rounds 2]
        [--jobs 60] [--compress 100] [--setup S] [--seed 7] [--hours 8]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from traces import make_trace

from qhpc_lab.qpu import ChunkOutcome, DeviceProfile, InFlight
from qhpc_lab.qpu.api import ENDED, QPUApiDriver, QPUApiSettings
from qhpc_lab.qpu.emulated import EmulatedQPU
from qhpc_lab.scheduler import SchedulerConfig, build_scheduler, create_app
from qhpc_lab.scheduler.auth import make_token

SECRET = "benchmark-secret"
ADMIN = "0"
USER = "1000"
TEST_SHOT_S = 0.0005
"""The ``test`` profile's shot: a chunk of 100 shots is 50 ms."""
CHUNK_SHOTS = 100


def sequence_json() -> str:
    """A 2-atom Pulser sequence with one 200 ns pulse (as the driver's tests submit)."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    register = Register.from_coordinates([(-3.0, 0.0), (3.0, 0.0)], prefix="q")
    sequence = Sequence(register, AnalogDevice)
    sequence.declare_channel("g", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(200, 2.0, 0.0, 0.0), "g")
    sequence.measure("ground-rydberg")
    return sequence.to_abstract_repr()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def iso_s(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


# -- drivers that time themselves ----------------------------------------------------------


@dataclass
class Chunk:
    """One ``run_chunk`` as the dispatcher saw it (perf_counter seconds)."""

    called: float
    shots: int
    in_force: int
    """The driver's chunk size when the chunk was asked for."""
    returned: float = math.nan


@dataclass
class Timing:
    """What a timed driver recorded; ``until`` fires once ``stop_when`` says so."""

    chunks: list[Chunk] = field(default_factory=list)
    done_at: dict[int, tuple[float, float]] = field(default_factory=dict)
    """QPU job uid → (perf_counter, time.time) when the answer saying it ended arrived."""
    posted_at: dict[int, tuple[float, float]] = field(default_factory=dict)
    """QPU job uid → (perf_counter, time.time) just before its ``POST /jobs`` was sent."""
    outcome_at: dict[int, float] = field(default_factory=dict)
    """QPU job uid → perf_counter when ``_outcome`` returned (parsed, timing learned)."""
    create_at: dict[int, float] = field(default_factory=dict)
    """QPU job uid → perf_counter when ``_create`` was entered."""
    store: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, end, name): perf_counter of each store write of the dispatch path (in the
    store's thread)."""
    stop_when: Callable[[Timing], bool] = lambda t: False
    until: asyncio.Event = field(default_factory=asyncio.Event)
    on: bool = False

    def reset(self, stop_when: Callable[[Timing], bool]) -> None:
        self.chunks.clear()
        self.done_at.clear()
        self.posted_at.clear()
        self.outcome_at.clear()
        self.create_at.clear()
        self.store.clear()
        self.stop_when = stop_when
        self.until = asyncio.Event()
        self.on = True


class TimedChunks:
    """A driver mixin: every ``run_chunk`` timed into :attr:`timing`."""

    timing: Timing
    profile: DeviceProfile

    async def run_chunk(self, key: str, program: Any, shots: int, remaining: int) -> ChunkOutcome:
        timing = self.timing
        chunk = Chunk(time.perf_counter(), shots, self.profile.chunk_shots)
        if timing.on:
            timing.chunks.append(chunk)
            if timing.stop_when(timing):
                timing.until.set()
        outcome = await super().run_chunk(key, program, shots, remaining)  # type: ignore[misc]
        chunk.returned = time.perf_counter()
        if timing.on and timing.stop_when(timing):
            timing.until.set()
        return outcome


class TimedEmulated(TimedChunks, EmulatedQPU):
    pass


class TimedApiDriver(TimedChunks, QPUApiDriver):
    """The QPU API driver, its requests timed: a ``GET /jobs/{uid}`` that says the job ended,
    and each ``POST /jobs`` just before it is sent (nothing else changed)."""

    async def _request(
        self, method: str, path: str, json: Any = None, retry_for_s: float | None = None
    ) -> dict[str, Any]:
        before = (time.perf_counter(), time.time())
        data = await super()._request(method, path, json=json, retry_for_s=retry_for_s)
        if not self.timing.on:
            return data
        if method == "POST" and path == "/jobs":
            self.timing.posted_at[int(data["uid"])] = before
        elif method == "GET" and path.startswith("/jobs/") and data.get("status") in ENDED:
            self.timing.done_at.setdefault(int(data["uid"]), (time.perf_counter(), time.time()))
        return data

    async def _outcome(self, flight: InFlight, sent_at: float | None = None) -> ChunkOutcome:
        outcome = await super()._outcome(flight, sent_at)
        assert flight.uid is not None
        if self.timing.on:
            self.timing.outcome_at[flight.uid] = time.perf_counter()
        return outcome

    async def _create(self, intent: InFlight, sequence: str) -> InFlight:
        entered = time.perf_counter()
        flight = await super()._create(intent, sequence)
        assert flight.uid is not None
        if self.timing.on:
            self.timing.create_at[flight.uid] = entered
        return flight


def emulated_factory() -> Callable[..., Any]:
    def make(profile: DeviceProfile, calibrated_at: float | None, *, calibration_id: int = 1):
        driver = TimedEmulated(profile, calibrated_at, calibration_id=calibration_id)
        driver.timing = Timing()
        return driver

    return make


def api_factory(settings: QPUApiSettings) -> Callable[..., Any]:
    def make(profile: DeviceProfile, calibrated_at: float | None, *, calibration_id: int = 1):
        driver = TimedApiDriver.connect(settings, calibrated_at, calibration_id=calibration_id)
        assert isinstance(driver, TimedApiDriver)
        driver.timing = Timing()
        return driver

    return make


# -- the device and the scheduler ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(profile: str, setup_s: float, log: Path) -> Iterator[str]:
    """``qhpc qpu serve --profile P --setup S`` on a free port; its base address."""
    port = free_port()
    command = [sys.executable, "-m", "qhpc_lab.cli", "qpu", "serve", "--profile", profile]
    command += ["--port", str(port), "--setup", f"{setup_s:g}"]
    process = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"qhpc qpu serve exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v1/system/operational", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"qhpc qpu serve did not answer:\n{log.read_text()}")
            time.sleep(0.2)
        warm_device(url)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def device_jobs(url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/stand-in/jobs", timeout=30).json()["data"]


def warm_device(url: str) -> None:
    """One QPU job straight through the API, so that the stand-in's emulator worker is warm:
    its first job's emulation (imports, first state) would otherwise count as the device's
    shot time, and the drivers would start from a per-shot time many times the real one."""
    job = {"nb_run": 10, "pulser_sequence": SEQUENCE, "context": {"batch_id": "warm-up"}}
    with httpx.Client(base_url=f"{url}/api/v1", timeout=60) as client:
        uid = client.post("/jobs", json=job).raise_for_status().json()["data"]["uid"]
        deadline = time.monotonic() + 120
        while client.get(f"/jobs/{uid}").json()["data"]["status"] != "DONE":
            if time.monotonic() > deadline:
                raise RuntimeError("the stand-in's warm-up job did not end")
            time.sleep(0.1)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Lab:
    """A started in-process scheduler, reached through httpx's ASGI transport."""

    scheduler: Any
    driver: Any
    transport: httpx.ASGITransport
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def client(self, uid: str) -> httpx.AsyncClient:
        if uid not in self.clients:
            token = make_token(SECRET, uid, admin=uid == ADMIN)
            self.clients[uid] = httpx.AsyncClient(
                transport=self.transport,
                base_url="http://scheduler",
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
        return self.clients[uid]

    async def submit(self, uid: str, shots: int, job_class: str | None = None) -> int:
        body: dict[str, Any] = {"sequence": SEQUENCE, "shots": shots}
        if job_class:
            body["job_class"] = job_class
        response = await self.client(uid).post("/jobs", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"submission refused: {response.status_code} {response.text}")
        return int(response.json()["id"])

    async def admin(self, what: str) -> None:
        (await self.client(ADMIN).post(f"/admin/{what}")).raise_for_status()

    async def wait_done(self, job_id: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while (await self.client(USER).get(f"/jobs/{job_id}")).json()["status"] != "DONE":
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} not DONE after {timeout} s")
            await asyncio.sleep(0.05)


STORE_WRITES = {
    "record_chunk": "record_chunk",
    "mark_running": "mark_running",
    "set_fact": "in_flight",
    "set_dispatching_fact": "in_flight",
}
"""What the store does between two chunks, by what it is counted as: the chunk's record, the
next one's start, and the QPU API driver's in-flight record (written before the POST and
after its answer; the ledger writes it with one or the other method)."""


def timed_store(store: Any, timing: Timing) -> None:
    """The store's dispatch-path writes timed where they run (the store's thread)."""
    for name, counted in STORE_WRITES.items():
        write = getattr(store, name, None)
        if write is None:
            continue

        def timed(
            *args: Any, _write: Callable[..., Any] = write, _name: str = counted, **kwargs: Any
        ) -> Any:
            start = time.perf_counter()
            try:
                return _write(*args, **kwargs)
            finally:
                if timing.on:
                    timing.store.append((start, time.perf_counter(), _name))

        setattr(store, name, timed)


@contextlib.asynccontextmanager
async def lab(directory: Path, device: str, factory: Callable[..., Any]) -> AsyncIterator[Lab]:
    config = SchedulerConfig(
        db=f"sqlite:///{directory / 'scheduler.db'}",
        device=device,
        auth=("token",),
        token_secret=SECRET,
        max_queued_jobs_per_user=0,
        max_queued_shots_per_user=0,
    )
    scheduler = build_scheduler(config, factory)
    timed_store(scheduler.store, scheduler.driver.timing)
    app = create_app(config, scheduler=scheduler)
    await scheduler.start()
    handle = Lab(scheduler, scheduler.driver, httpx.ASGITransport(app=app))
    try:
        yield handle
    finally:
        await scheduler.stop()
        scheduler.store.close()
        for client in handle.clients.values():
            await client.aclose()


SEQUENCE = ""


# -- 1 and 2: per-chunk overhead and gaps ---------------------------------------------------


@dataclass
class ChunkRun:
    driver: str
    shape: str
    chunks: list[Chunk]
    gaps: dict[str, list[float]] = field(default_factory=dict)

    def cycles(self) -> tuple[float, float, float, float]:
        """(wall s, shots s, inside ms/chunk beyond shots, outside ms/chunk) over the cycles."""
        measured, following = self.chunks[:-1], self.chunks[-1]
        wall = following.called - measured[0].called
        shots_s = sum(c.shots for c in measured) * TEST_SHOT_S
        inside = sum(c.returned - c.called - c.shots * TEST_SHOT_S for c in measured)
        outside = sum(b.called - a.returned for a, b in itertools.pairwise(self.chunks))
        n = len(measured)
        return wall, shots_s, 1000 * inside / n, 1000 * outside / n


async def chunk_run(
    handle: Lab, driver: str, shape: str, jobs: int, shots: int, chunks: int
) -> ChunkRun:
    """``jobs`` jobs of ``shots`` queued while drained; timed over ``chunks`` whole cycles."""
    warm = await handle.submit(USER, CHUNK_SHOTS)
    await handle.wait_done(warm)
    await handle.admin("drain")
    for _ in range(jobs):
        await handle.submit(USER, shots)
    timing: Timing = handle.driver.timing
    timing.reset(lambda t: len(t.chunks) >= chunks)
    await handle.admin("resume")
    await asyncio.wait_for(timing.until.wait(), 600)
    timing.on = False
    return ChunkRun(driver, shape, list(timing.chunks[:chunks]))


def gaps(timing: Timing, device: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per consecutive pair of QPU jobs of the run, in ms: the scheduler-side gap and its
    parts, the device-side gap and its parts."""
    by_uid = {int(job["uid"]): job for job in device}
    uids = sorted(u for u in timing.posted_at if u in timing.done_at)
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "scheduler",
            "driver_tail",
            "dispatcher",
            "ledger",
            "store",
            *(f"store:{name}" for name in set(STORE_WRITES.values())),
            "device",
            "poll",
            "post",
        )
    }
    for a, b in itertools.pairwise(uids):
        if b != a + 1 or by_uid[b]["created_datetime"] is None:
            continue
        done_pc, done_wall = timing.done_at[a]
        post_pc, post_wall = timing.posted_at[b]
        end_a, created_b = iso_s(by_uid[a]["end_datetime"]), iso_s(by_uid[b]["created_datetime"])
        call = next((c.called for c in timing.chunks if c.called > timing.outcome_at[a]), None)
        if call is None or b not in timing.create_at:
            continue  # the run's last chunk: no next one timed
        out["scheduler"].append(1000 * (post_pc - done_pc))
        out["driver_tail"].append(1000 * (timing.outcome_at[a] - done_pc))
        out["dispatcher"].append(1000 * (call - timing.outcome_at[a]))
        out["ledger"].append(1000 * (timing.create_at[b] - call))
        writes = [(e - s, name) for s, e, name in timing.store if done_pc <= s and e <= post_pc]
        out["store"].append(1000 * sum(w for w, _ in writes))
        for name in set(STORE_WRITES.values()):
            out[f"store:{name}"].append(1000 * sum(w for w, n in writes if n == name))
        out["device"].append(1000 * (created_b - end_a))
        out["poll"].append(1000 * (done_wall - end_a))
        out["post"].append(1000 * (created_b - post_wall))
    return out


async def part_one(args: argparse.Namespace, tmp: Path) -> list[ChunkRun]:
    """Every queue shape with each driver, ``--rounds`` times; the drivers' order alternates
    from one round to the next, so that the machine's drift hits both alike."""
    shapes = [
        # a second job behind the first: a driver sizing its chunks above 100 shots still
        # runs enough of them (a job's shots are at most the device's max_runs)
        (f"1 job of {args.chunks} chunks (+1 behind)", 2, args.chunks * CHUNK_SHOTS),
        (f"{args.depth} jobs of 1 chunk", args.depth, CHUNK_SHOTS),
        (f"{args.depth} jobs of 10 chunks", args.depth, 10 * CHUNK_SHOTS),
    ]
    runs: list[ChunkRun] = []
    with served("test", 0.0, tmp / "qpu-test.log") as url:
        settings = QPUApiSettings(url, time_per_shot_s=TEST_SHOT_S, chunk_seconds=0.05)
        for round_ in range(args.rounds):
            for i, (shape, jobs, shots) in enumerate(shapes):
                drivers = ("in-process", "QPU API")
                for name in drivers if round_ % 2 == 0 else reversed(drivers):
                    directory = tmp / f"one-{round_}-{i}-{name.replace(' ', '')}"
                    directory.mkdir()
                    factory = emulated_factory() if name == "in-process" else api_factory(settings)
                    first_uid = len(device_jobs(url))
                    say(f"part 1, round {round_ + 1}: {shape}, {name}")
                    async with lab(directory, "test", factory) as handle:
                        run = await chunk_run(handle, name, shape, jobs, shots, args.chunks)
                        if name == "QPU API":
                            await asyncio.sleep(0.3)  # the chunk in flight ends on the device
                            jobs_seen = device_jobs(url)[first_uid:]
                            run.gaps = gaps(handle.driver.timing, jobs_seen)
                    runs.append(run)
                    await asyncio.sleep(0.3)
    return runs


# -- 3: utilisation under the fresnel-like mix ----------------------------------------------


def compressed_profile(directory: Path, factor: float) -> Path:
    """``fresnel-like`` with its times divided by ``factor``; no calibration during the run."""
    text = (resources.files("qhpc_lab.qpu") / "profiles" / "fresnel-like.json").read_text()
    data = json.loads(text)
    data["name"] = f"fresnel-like-{factor:g}x"
    data["description"] = f"fresnel-like with its times divided by {factor:g} (a benchmark)"
    data["time_per_shot_s"] /= factor
    data["chunk_seconds"] /= factor
    data["job_setup_s"] = data.get("job_setup_s", 0.0) / factor
    data["calibration"] = {"interval_s": 30 * 86400, "duration_s": 1.0}
    path = directory / f"{data['name']}.json"
    path.write_text(json.dumps(data))
    return path


@dataclass(frozen=True)
class TraceJob:
    uid: str
    job_class: str
    shots: int
    arrival_s: float


def trace_slice(seed: int, hours: float, jobs: int) -> list[TraceJob]:
    """``jobs`` jobs of the trace, each class in proportion to its share of the trace's jobs,
    the earliest of each class (a loop's arrivals: its start plus its think times)."""
    streams = make_trace(random.Random(seed), hours)
    users = {s.user_id for s in streams}
    uid_of = {user: str(2000 + i) for i, user in enumerate(sorted(users))}
    every: list[TraceJob] = []
    for stream in streams:
        at = stream.start_s
        for i, shots in enumerate(stream.shots):
            every.append(TraceJob(uid_of[stream.user_id], stream.job_class, shots, at))
            if stream.closed and i < len(stream.think_s):
                at += stream.think_s[i]
    every.sort(key=lambda job: job.arrival_s)
    classes = sorted({job.job_class for job in every})
    share = {c: sum(job.job_class == c for job in every) / len(every) for c in classes}
    counts = {c: max(1, round(jobs * share[c])) for c in classes}
    chosen: list[TraceJob] = []
    for c in classes:
        chosen += [job for job in every if job.job_class == c][: counts[c]]
    return sorted(chosen, key=lambda job: job.arrival_s)


@dataclass
class MixRun:
    driver: str
    jobs: int
    shots: int
    shot_s: float
    span_s: float
    chunks: list[Chunk]
    chunk_shots: int
    warm_job: int
    first_chunk_shots: int = 0
    device: dict[str, float] = field(default_factory=dict)


async def mix_run(
    handle: Lab, driver: str, slice_: list[TraceJob], shot_s: float, warm_shots: int
) -> MixRun:
    warm = await handle.submit(USER, warm_shots)
    await handle.wait_done(warm)
    await handle.admin("drain")
    total = sum(job.shots for job in slice_)
    for job in slice_:
        await handle.submit(job.uid, job.shots, job.job_class)
    timing: Timing = handle.driver.timing
    timing.reset(lambda t: sum(c.shots for c in t.chunks if not math.isnan(c.returned)) >= total)
    await handle.admin("resume")
    await asyncio.wait_for(timing.until.wait(), 900)
    timing.on = False
    chunks = list(timing.chunks)
    span = chunks[-1].returned - chunks[0].called
    return MixRun(
        driver,
        len(slice_),
        total,
        total * shot_s,
        span,
        chunks,
        handle.driver.profile.chunk_shots,
        warm,
    )


def device_utilisation(jobs: list[dict[str, Any]]) -> dict[str, float]:
    created = [iso_s(j["created_datetime"]) for j in jobs]
    started = [iso_s(j["start_datetime"]) for j in jobs]
    ended = [iso_s(j["end_datetime"]) for j in jobs]
    busy = sum(e - s for s, e in zip(started, ended, strict=True))
    setups = [s - c for c, s in zip(created, started, strict=True)]
    span = max(ended) - min(created)
    gaps_ms = [1000 * (c - e) for e, c in zip(ended[:-1], created[1:], strict=True)]
    return {
        "busy_s": busy,
        "setup_s": sum(setups),
        "span_s": span,
        "excluded": busy / (span - sum(setups)),
        "included": busy / span,
        "setup_p50_ms": 1000 * statistics.median(setups),
        "setup_max_ms": 1000 * max(setups),
        "gap_p50_ms": statistics.median(gaps_ms),
        "gap_p90_ms": percentile(gaps_ms, 0.9),
        "gap_max_ms": max(gaps_ms),
        "per_shot_ms": 1000 * busy / sum(j["nb_run"] for j in jobs),
    }


async def part_three(args: argparse.Namespace, tmp: Path) -> tuple[list[MixRun], list[TraceJob]]:
    path = compressed_profile(tmp, args.compress)
    profile = DeviceProfile.load(str(path))
    shot_s = profile.time_per_shot_s
    setup_s = args.setup / args.compress
    slice_ = trace_slice(args.seed, args.hours, args.jobs)
    warm_shots = 200
    runs: list[MixRun] = []
    with served(str(path), setup_s, tmp / "qpu-fresnel.log") as url:
        settings = QPUApiSettings(url, time_per_shot_s=shot_s, chunk_seconds=profile.chunk_seconds)
        for name in ("in-process", "QPU API"):
            directory = tmp / f"three-{name.replace(' ', '')}"
            directory.mkdir()
            factory = emulated_factory() if name == "in-process" else api_factory(settings)
            first_uid = len(device_jobs(url))
            say(f"part 3: {len(slice_)} jobs of the fresnel-like trace, {name}")
            async with lab(directory, str(path), factory) as handle:
                if name == "QPU API":
                    first_chunk = handle.driver.profile.chunk_shots
                run = await mix_run(handle, name, slice_, shot_s, warm_shots)
                if name == "QPU API":
                    run.first_chunk_shots = first_chunk
                    warm = f"qhpc-job-{run.warm_job}"
                    jobs = [j for j in device_jobs(url)[first_uid:] if j["batch_id"] != warm]
                    run.device = device_utilisation(jobs)
                    run.device["driver_setup_ms"] = 1000 * handle.driver.setup_s
                else:
                    run.first_chunk_shots = profile.chunk_shots
            runs.append(run)
    return runs, slice_


# -- the report -----------------------------------------------------------------------------


def sizes_text(chunks: list[Chunk]) -> str:
    """The chunks' sizes, most frequent first: ``99×97, 1×2``."""
    counts = collections.Counter(c.shots for c in chunks).most_common()
    shown = [f"{size}×{n}" for size, n in counts[:3]]
    if len(counts) > 3:
        shown.append(f"{len(counts) - 3} other sizes")
    return ", ".join(shown)


def stats(values: list[float]) -> str:
    if not values:
        return "– | – | –"
    return f"{statistics.median(values):.2f} | {percentile(values, 0.9):.2f} | {max(values):.2f}"


def report(
    args: argparse.Namespace,
    one: list[ChunkRun],
    three: list[MixRun],
    slice_: list[TraceJob],
    loads: tuple[str, str],
    wall_s: float,
) -> str:
    lines = [
        f"1. Per-chunk overhead, {args.chunks - 1} whole chunk cycles a run, chunks of "
        f"{CHUNK_SHOTS} shots × {TEST_SHOT_S * 1000:g} ms (test profile), {args.rounds} rounds; "
        "ms a chunk, median of the rounds",
        "",
        "| queue | driver | chunk shots × count (round 1) | wall s | shots s | overhead "
        "| each round | inside run_chunk, beyond shots | outside (scheduler) "
        "| API vs in-process |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    shapes = list(dict.fromkeys(run.shape for run in one))
    for shape in shapes:
        base = None
        for driver in ("in-process", "QPU API"):
            rounds = [run for run in one if run.shape == shape and run.driver == driver]
            cycles = [run.cycles() for run in rounds]
            per = [
                1000 * (wall - shots_s) / (len(run.chunks) - 1)
                for run, (wall, shots_s, _, _) in zip(rounds, cycles, strict=True)
            ]
            wall, shots_s, inside, outside = (
                statistics.median(c[k] for c in cycles) for k in range(4)
            )
            overhead = statistics.median(per)
            base = overhead if base is None else base
            versus = f"{overhead - base:+.2f} ms, ×{overhead / base:.2f}"
            versus = "" if driver == "in-process" else versus
            lines.append(
                f"| {shape} | {driver} | {sizes_text(rounds[0].chunks[:-1])} | {wall:.2f} | "
                f"{shots_s:.2f} | {overhead:.2f} | {', '.join(f'{p:.2f}' for p in per)} | "
                f"{inside:.2f} | {outside:.2f} | {versus} |"
            )
    lines += [
        "",
        "2. Idle gap between consecutive QPU jobs (QPU API driver, test profile, setup 0), ms, "
        "the rounds' pairs together",
        "",
        "| queue | pairs | what | p50 | p90 | max |",
        "|---|---:|---|---:|---:|---:|",
    ]
    names = {
        "scheduler": "scheduler side: DONE answer read → next POST /jobs sent",
        "driver_tail": "… of which the driver after DONE (result parsed, timing learned)",
        "dispatcher": "… of which the dispatcher (record chunk, decide, mark running)",
        "ledger": "… of which run_chunk until _create (ledger write before sending)",
        "store": "… store writes within it, summed (in the store's thread)",
        "store:record_chunk": "… … record_chunk (chunk i)",
        "store:mark_running": "… … mark_running (chunk i+1)",
        "store:in_flight": "… … the in-flight record before the POST (ledger)",
        "device": "device side: end(i) → created(i+1)",
        "poll": "… of which end(i) → DONE answer read (polling)",
        "post": "… of which POST sent → created(i+1) (HTTP, device checks)",
    }
    for shape in shapes:
        rounds = [run for run in one if run.shape == shape and run.gaps]
        for key, what in names.items():
            values = [v for run in rounds for v in run.gaps[key]]
            lines.append(f"| {shape} | {len(values)} | {what} | {stats(values)} |")
    api = next(r for r in three if r.driver == "QPU API")
    inproc = next(r for r in three if r.driver == "in-process")
    classes = {
        c: sum(j.job_class == c for j in slice_) for c in sorted({j.job_class for j in slice_})
    }
    d = api.device
    lines += [
        "",
        f"3. Utilisation, fresnel-like compressed {args.compress:g}× "
        f"({1000 * api.shot_s / api.shots:.3g} ms a shot), "
        f"setup {1000 * args.setup / args.compress:g} ms, {api.jobs} jobs "
        f"({', '.join(f'{n} {c}' for c, n in classes.items())}), "
        f"{api.shots} shots, all submitted up front",
        "",
        "| driver | chunk shots: first → range during the run → last | chunks "
        "| of which shorter (a job's last) "
        "| shot time s | span s (first run_chunk call → last return) | shot time / span "
        "| device span s (first created → last end) | utilisation, setup excluded "
        "| setup included |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in (inproc, api):
        short = sum(c.shots < c.in_force for c in run.chunks)
        sizes = [c.in_force for c in run.chunks]
        if run is api:
            device = f"{d['span_s']:.2f}"
            excl, incl = f"{100 * d['excluded']:.1f} %", f"{100 * d['included']:.1f} %"
        else:
            device = excl = incl = "–"
        lines.append(
            f"| {run.driver} | {run.first_chunk_shots} → {min(sizes)}–{max(sizes)} → "
            f"{run.chunk_shots} | {len(run.chunks)} | "
            f"{short} | {run.shot_s:.2f} | {run.span_s:.2f} | "
            f"{100 * run.shot_s / run.span_s:.1f} % | {device} | {excl} | {incl} |"
        )
    small = sum(j.shots < api.chunk_shots for j in slice_)
    lines += [
        "",
        f"QPU API, device timestamps: busy {d['busy_s']:.2f} s "
        f"({d['per_shot_ms']:.3f} ms a shot), setup Σ {d['setup_s']:.2f} s "
        f"(p50 {d['setup_p50_ms']:.1f} ms, max {d['setup_max_ms']:.1f} ms; the driver's "
        f"estimate {d['driver_setup_ms']:.1f} ms), gap end → next created p50 "
        f"{d['gap_p50_ms']:.1f} ms, p90 {d['gap_p90_ms']:.1f} ms, max {d['gap_max_ms']:.1f} ms; "
        f"{small} of the {len(slice_)} jobs are smaller than the settled chunk (each pays a "
        "whole setup).",
        "",
        f"Load average (uptime) before: {loads[0]}; after: {loads[1]}; {os.cpu_count()} cores; "
        f"benchmark wall time {wall_s:.0f} s.",
    ]
    return "\n".join(lines)


def uptime() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return out.strip().split("load average:")[-1].strip()


async def main_async(args: argparse.Namespace) -> str:
    global SEQUENCE
    SEQUENCE = sequence_json()
    before = uptime()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        one = await part_one(args, tmp)
        three, slice_ = await part_three(args, tmp)
    return report(args, one, three, slice_, (before, uptime()), time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--chunks", type=int, default=100, help="chunks a run, 2 to 100 (one fewer cycles timed)"
    )
    parser.add_argument("--depth", type=int, default=200, help="jobs queued (the deep queue)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of part 1")
    parser.add_argument("--jobs", type=int, default=60, help="jobs of the fresnel-like slice")
    parser.add_argument("--compress", type=float, default=100.0, help="time compression")
    parser.add_argument(
        "--setup",
        type=float,
        default=None,
        help="setup a QPU job, uncompressed (default: fresnel-like's job_setup_s)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the workload trace")
    parser.add_argument("--hours", type=float, default=8.0, help="span of the trace's arrivals")
    args = parser.parse_args()
    if args.setup is None:
        args.setup = DeviceProfile.load("fresnel-like").job_setup_s
    if not 1 < args.chunks <= 100:
        parser.error("--chunks: 2 to 100 (one job of them must fit the test profile's max_runs)")
    if args.depth < args.chunks:
        parser.error("--depth: at least --chunks (its jobs of one chunk must last the run)")
    print(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
