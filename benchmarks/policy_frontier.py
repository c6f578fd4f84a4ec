"""The policy's frontier: QPU utilisation, interactive p95 wait and hybrid-loop slowdown over
chunk sizes and the loop-hold rule's settings, on the site trace of ``benchmarks/simulate.py``.

Every chunk is one QPU job on a device behind the QPU API and pays the device profile's
``job_setup_s`` before its first shot (the simulated QPU waits it out; the policy sees the
per-shot time with the setup spread over a chunk, as the QPU API driver reports it). Small
chunks let interactive work in sooner but lose a setup each; large ones keep the QPU busy
and make a loop's next job wait behind them. Each point of the grid (a chunk length times
every combination of the ``--policy`` values) replays seeds 1..N of the site trace (variational
loops in sessions, a one-hour reservation and a quota; ``simulate.site_row``) and is judged
by the aims of docs/policy.md:

- utilisation ≥ 95 % of the time the QPU could work;
- interactive p95 wait ≤ 59.4 s (``report.INTERACTIVE_P95_AIM_S``: two chunks as
  ``fresnel-like`` first shipped them; a fixed bar, so that shorter chunks are not judged
  against a tighter one), over the waits
  clear of the reservation (one across it lasts until the window's end whatever the settings);
- every loop's wall time ≤ 1.3× the same loop's alone on an empty QPU (with the same chunks),
  over the loops clear of the reservation;
- no chunk of another account overlapping the reservation (the rule's guarantee).

Prints the table, writes ``docs/img/policy-frontier.png`` and the ``## Policy frontier``
section of ``docs/benchmarks.md`` (nothing else in it). Virtual time: the figures do not
depend on the machine, only the run's duration does (run it ``nice -n 19``)::

    .venv/bin/python benchmarks/policy_frontier.py [--profile fresnel-like] [--seeds 10]
        [--hours 8] [--chunks 10,20,30,60,120] [--policy loop_hold_max_s=0,30,60]

``--policy NAME=V1,V2`` takes any numeric ``PolicyConfig`` setting (repeat it for several:
the grid is their product).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from qhpc_lab.qpu import DeviceProfile
from qhpc_lab.scheduler import policy

sys.path.insert(0, str(Path(__file__).parent))
from report import INTERACTIVE_P95_AIM_S, SiteRow, write_section
from simulate import Simulation, _spans, _union_length, _within, site_row
from traces import make_site_trace

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "nice -n 19 .venv/bin/python benchmarks/policy_frontier.py"
HEADING = "## Policy frontier: chunk size and loop holds"
UTILISATION_AIM = 0.95
LOOP_AIM = 1.3


@dataclass(frozen=True)
class Point:
    """One setting of the grid and what it gave on every seed."""

    chunk_seconds: float
    settings: dict[str, float]
    rows: list[SiteRow]

    @property
    def label(self) -> str:
        held = ", ".join(f"{k} {v:g}" for k, v in self.settings.items())
        return f"{self.chunk_seconds:g} s" + (f", {held}" if held else "")

    def utilisations(self) -> list[float]:
        return [r.utilisation for r in self.rows]

    def p95s(self) -> list[float]:
        """Per seed, the interactive p95 wait of the waits clear of the reservation (a wait
        across it lasts until its end, whatever the chunks and holds)."""
        return [r.interactive_p95_clear_s for r in self.rows]

    def slowdowns(self) -> list[float]:
        """Per seed, the slowest loop's wall time over its own alone on an empty QPU, among
        the loops clear of the reservation."""
        return [
            max(v for k, v in r.loop_wall_ratios.items() if k not in r.loops_across_window)
            for r in self.rows
        ]

    def intruding(self) -> int:
        return sum(r.intruding_chunks for r in self.rows)


HOLD_BOUNDS = ("loop_hold_budget_s", "loop_hold_window_s", "loop_yield_after_chunks")
"""Settings that only bound loop holds: moot where ``loop_hold_max_s`` is 0 (no holds)."""


@dataclass(frozen=True)
class IdleBreakdown:
    """Where one site run's time went, in seconds: what the utilisation figure divides by
    (``waiting``: some job queued or running, less ``window_idle``), split into shot time and
    the rest, and the time it leaves out."""

    label: str
    waiting: float
    shots: float
    setup: float
    calibration: float
    holds: float
    window_idle: float
    """Inside the reservation, no work of its owner: the QPU may not run others' (left out)."""
    empty: float
    """No job queued or running, from the first arrival to the last result (left out)."""

    @property
    def other(self) -> float:
        """Idle with work waiting, not a setup, a calibration or a hold: jobs kept out by
        the coming window, waiting for a calibration their age bound needs, dispatch gaps."""
        rest = self.waiting - self.shots - self.setup - self.calibration - self.holds
        return round(rest, 6) or 0.0  # no "-0 s" from rounding

    @property
    def utilisation(self) -> float:
        return self.shots / self.waiting


def idle_breakdown(
    label: str,
    profile: DeviceProfile,
    seed: int,
    args: argparse.Namespace,
    config: policy.PolicyConfig,
) -> IdleBreakdown:
    """Seed ``seed``'s site run (as :func:`simulate.site_row` plays it), its time split."""
    site = make_site_trace(random.Random(seed), args.hours)
    window = site.reservation
    run = Simulation(
        profile,
        site.streams,
        "site",
        args.fresh_age_s,
        config,
        sessions=True,
        reservations=[window],
        quotas=[site.quota],
    ).play()
    spans = _spans(run)
    owned = [r for r in run.jobs.values() if window.owns(r.job)]
    window_idle = _within(spans, window) - _within(_spans(run, owned), window)
    waiting = _merged(spans)

    def waited(kind: str) -> float:
        return sum(_overlap(waiting, start, end) for start, end, k in run.timeline if k == kind)

    first = min(start for start, _ in spans)
    last = max(end for _, end in spans)
    return IdleBreakdown(
        label=label,
        waiting=run.work_span_s - window_idle,
        shots=run.busy_s,
        setup=len(run.chunks) * profile.job_setup_s,
        calibration=waited("calibration"),
        holds=waited("hold"),
        window_idle=window_idle,
        empty=(last - first) - _union_length(spans),
    )


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of ``spans`` as disjoint sorted spans."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _overlap(merged: list[tuple[float, float]], start: float, end: float) -> float:
    """How long ``[start, end)`` lies within the disjoint ``merged`` spans."""
    return sum(max(0.0, min(end, e) - max(start, s)) for s, e in merged)


def breakdown_table(rows: list[IdleBreakdown]) -> str:
    lines = [
        "| run | utilisation | time work waited, window idle left out (s) | shots | setup "
        "| calibrations | loop holds | other idle with work waiting | (left out: window "
        "idle, its owner had nothing queued) | (left out: empty queue) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in rows:

        def part(seconds: float, b: IdleBreakdown = b) -> str:
            return f"{seconds:.0f} s ({seconds / b.waiting:.1%})"

        lines.append(
            f"| {b.label} | {b.utilisation:.1%} | {b.waiting:.0f} | {part(b.shots)} "
            f"| {part(b.setup)} | {part(b.calibration)} | {part(b.holds)} | {part(b.other)} "
            f"| {b.window_idle:.0f} s | {b.empty:.0f} s |"
        )
    return "\n".join(lines)


def grid(options: list[str]) -> list[dict[str, float]]:
    """The product of ``NAME=V1,V2`` options over numeric :class:`PolicyConfig` settings, each
    setting of the hold bounds once where holds are off (``loop_hold_max_s`` 0: they change
    nothing there, so the first of their values stands for all)."""
    names = {f.name for f in dataclasses.fields(policy.PolicyConfig)}
    axes: list[list[tuple[str, float]]] = []
    for option in options:
        name, _, values = option.partition("=")
        if name not in names or not values:
            raise SystemExit(f"--policy {option}: expected NAME=V1,V2 with NAME one of {names}")
        axes.append([(name, float(v)) for v in values.split(",")])
    first = {axis[0][0]: axis[0][1] for axis in axes}
    settings: list[dict[str, float]] = []
    for combo in map(dict, itertools.product(*axes)):
        if combo.get("loop_hold_max_s") == 0:
            combo.update({k: first[k] for k in HOLD_BOUNDS if k in combo})
        if combo not in settings:
            settings.append(combo)
    return settings


def measure(
    profile: DeviceProfile,
    chunk_seconds: float,
    settings: dict[str, float],
    args: argparse.Namespace,
) -> Point:
    chunked = dataclasses.replace(profile, chunk_seconds=chunk_seconds)
    config = policy.PolicyConfig(**settings)  # type: ignore[arg-type]
    rows = [
        site_row(chunked, seed, args.hours, args.fresh_age_s, config, reference=False)
        for seed in range(1, args.seeds + 1)
    ]
    return Point(chunk_seconds, settings, rows)


def table(points: list[Point], p95_aim_s: float, profile: DeviceProfile) -> str:
    lines = [
        "| chunk: shots time (shots) / setup share | loop holds | utilisation: min – max "
        f"(seeds ≥ {UTILISATION_AIM:.0%}) | interactive p95 wait (s): median, min – max "
        f"(seeds ≤ {p95_aim_s:g} s), waits clear of the window | the same, all waits: median "
        f"| slowest loop clear of the window / alone: median, min – max (seeds ≤ {LOOP_AIM:g}×) "
        "| QPU held for loops (s, median) | others' chunks in the window |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        shots = max(1, int(p.chunk_seconds / profile.time_per_shot_s))
        share = profile.job_setup_s / (profile.job_setup_s + shots * profile.time_per_shot_s)
        u, w, s = p.utilisations(), p.p95s(), p.slowdowns()
        held = ", ".join(f"{k} {v:g}" for k, v in p.settings.items()) or "defaults"
        lines.append(
            f"| {shots * profile.time_per_shot_s:.1f} s ({shots}) / {share:.1%} | {held} "
            f"| {min(u):.1%} – {max(u):.1%} ({sum(x >= UTILISATION_AIM for x in u)}) "
            f"| {statistics.median(w):.0f}, {min(w):.0f} – {max(w):.0f} "
            f"({sum(x <= p95_aim_s for x in w)}) "
            f"| {statistics.median(r.summary.interactive_p95_s for r in p.rows):.0f} "
            f"| {statistics.median(s):.2f}, {min(s):.2f} – {max(s):.2f} "
            f"({sum(x <= LOOP_AIM for x in s)}) "
            f"| {statistics.median(r.held_s for r in p.rows):.0f} | {p.intruding()} |"
        )
    return "\n".join(lines)


def is_default(point: Point, profile: DeviceProfile) -> bool:
    """The point of the shipped profile's chunk and the policy's default settings."""
    defaults = policy.PolicyConfig()
    return point.chunk_seconds == profile.chunk_seconds and all(
        getattr(defaults, k) == v for k, v in point.settings.items()
    )


def verdict(points: list[Point], profile: DeviceProfile, p95_aim_s: float) -> str:
    """Which aims the defaults meet on how many seeds (or that the grid misses them)."""
    chosen = next((p for p in points if is_default(p, profile)), None)
    if chosen is None:
        return "The defaults are not a point of this grid."
    u, w, s = chosen.utilisations(), chosen.p95s(), chosen.slowdowns()
    n = len(chosen.rows)
    return (
        f"The defaults (chunk {chosen.label}): "
        f"utilisation ≥ {UTILISATION_AIM:.0%} on {sum(x >= UTILISATION_AIM for x in u)} of {n} "
        f"seeds ({min(u):.1%} – {max(u):.1%}); interactive p95 wait clear of the window ≤ "
        f"{p95_aim_s:g} s on {sum(x <= p95_aim_s for x in w)} of {n} ({min(w):.0f} – "
        f"{max(w):.0f} s); every loop clear of the window ≤ {LOOP_AIM:g}× alone on "
        f"{sum(x <= LOOP_AIM for x in s)} of {n} (slowest {min(s):.2f} – {max(s):.2f}×); "
        f"others' chunks in the window: {chosen.intruding()}."
    )


def plot(points: list[Point], p95_aim_s: float, path: Path) -> None:
    """Two panels over the median interactive p95 wait: mean utilisation, and the median of
    the slowest loop's slowdown; one line per loop-hold setting, through the chunk sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    series: dict[str, list[Point]] = {}
    for p in points:
        key = ", ".join(f"{k} {v:g}" for k, v in p.settings.items()) or "defaults"
        series.setdefault(key, []).append(p)
    for key, line in series.items():
        x = [statistics.median(p.p95s()) for p in line]
        util = [100 * statistics.mean(p.utilisations()) for p in line]
        slow = [statistics.median(p.slowdowns()) for p in line]
        left.plot(x, util, marker="o", label=key)
        right.plot(x, slow, marker="o", label=key)
        for p, xi, ui, si in zip(line, x, util, slow, strict=True):
            left.annotate(
                f"{p.chunk_seconds:g} s",
                (xi, ui),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
            right.annotate(
                f"{p.chunk_seconds:g} s",
                (xi, si),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    for ax in (left, right):
        ax.axvline(p95_aim_s, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("interactive p95 wait clear of the window, median over seeds (s)")
        ax.grid(alpha=0.3)
    left.axhline(100 * UTILISATION_AIM, color="black", linestyle=":", linewidth=1)
    left.set_ylabel("QPU utilisation, mean over seeds (%)")
    right.axhline(LOOP_AIM, color="black", linestyle=":", linewidth=1)
    right.set_ylabel("slowest loop clear of the window / alone, median")
    right.legend(fontsize=8, title="chunk lengths along each line", title_fontsize=8)
    fig.suptitle("Policy frontier on the site trace (dashed/dotted: the aims)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="fresnel-like", help="device profile")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 1..N of the site trace")
    parser.add_argument("--hours", type=float, default=8.0, help="span of the arrivals")
    parser.add_argument("--fresh-age-s", type=float, default=3600.0, help="'fresh' calibration")
    parser.add_argument(
        "--chunks", default="10,20,30,60,120", help="chunk lengths: shot time, seconds"
    )
    parser.add_argument(
        "--policy",
        action="append",
        default=None,
        help="NAME=V1,V2: a PolicyConfig setting's values (default loop_hold_max_s=0,30,60)",
    )
    parser.add_argument(
        "--breakdown-seed", type=int, default=7, help="the seed whose idle time is split up"
    )
    args = parser.parse_args()
    options = args.policy or ["loop_hold_max_s=0,30,60"]
    profile = DeviceProfile.load(args.profile)
    p95_aim_s = INTERACTIVE_P95_AIM_S
    chunks = [float(c) for c in args.chunks.split(",")]
    started = time.monotonic()
    points = [
        measure(profile, chunk, settings, args) for settings in grid(options) for chunk in chunks
    ]
    defaults = policy.PolicyConfig()
    seed = args.breakdown_seed
    breakdown = [
        idle_breakdown(
            f"defaults (chunk {profile.chunk_seconds:g} s)", profile, seed, args, defaults
        ),
        idle_breakdown(
            "the same, no setup",
            dataclasses.replace(profile, job_setup_s=0.0),
            seed,
            args,
            defaults,
        ),
        *(
            idle_breakdown(
                f"chunk {chunk:g} s",
                dataclasses.replace(profile, chunk_seconds=chunk),
                seed,
                args,
                defaults,
            )
            for chunk in (120.0, 300.0)
        ),
    ]
    elapsed = time.monotonic() - started
    command = (
        f"{COMMAND} --profile {args.profile} --seeds {args.seeds} --hours {args.hours:g} "
        f"--chunks {args.chunks} "
        + " ".join(f"--policy {o}" for o in options)
        + f" --breakdown-seed {seed}"
    )
    body = (
        f"`{profile.name}`: {profile.time_per_shot_s:g} s a shot, {profile.job_setup_s:g} s "
        f"setup per QPU job (one per chunk), shipped chunk {profile.chunk_seconds:g} s. Site "
        f"trace, seeds 1–{args.seeds}, {args.hours:g} h of arrivals.\n\n"
        f"{table(points, p95_aim_s, profile)}\n\n"
        f"{verdict(points, profile, p95_aim_s)}\n\n"
        f"![the frontier](img/policy-frontier.png)\n\n"
        f"Where the time goes, seed {seed}, the policy's defaults:\n\n"
        f"{breakdown_table(breakdown)}\n\n"
        f"Virtual time; {len(points) * args.seeds + len(breakdown)} site runs took "
        f"{elapsed:.0f} s of wall time "
        f"at load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1 / 5 / 15 min)."
        f"\n\nReproduce: `{command}`"
    )
    print(body, flush=True)
    plot(points, p95_aim_s, ROOT / "docs/img/policy-frontier.png")
    write_section(ROOT / "docs/benchmarks.md", HEADING, body)


if __name__ == "__main__":
    main()
