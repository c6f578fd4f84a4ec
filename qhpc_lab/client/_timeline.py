"""A job's timeline drawn: its chunks, what ran while it waited, and the device's holds.

The entries are those of the scheduler's ``GET /jobs/{id}/timeline`` (docs/operations.md):
``queued``, ``chunk`` (the job's own), ``waited_behind`` (another class's chunks),
``calibration``, ``maintenance``, ``draining`` and ``finished``; times in Unix seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qhpc_lab.vocabulary import format_duration

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ROWS = ("this job", "other classes", "device")
COLOURS = {
    "chunk": "#4c72b0",
    "waited_behind": "#dd8452",
    "calibration": "#55a868",
    "maintenance": "#c44e52",
    "draining": "#8172b3",
}
ROW_OF = {"chunk": 0, "waited_behind": 1, "calibration": 2, "maintenance": 2, "draining": 2}


def plot_timeline(entries: list[dict[str, Any]], title: str, ax: Axes | None = None) -> Axes:
    """One bar per span on three rows, seconds from the job's submission; returns the Axes."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(8, 2.2))
    origin = entries[0]["at"] if entries else 0.0
    shown: set[str] = set()
    for entry in entries:
        kind = entry["event"]
        if kind not in ROW_OF:
            continue
        label = kind.replace("_", " ") if kind not in shown else None
        shown.add(kind)
        start, width = entry["at"] - origin, entry["until"] - entry["at"]
        ax.broken_barh(
            [(start, max(width, 1e-3))],
            (ROW_OF[kind] - 0.4, 0.8),
            color=COLOURS[kind],
            label=label,
        )
    for entry in entries:
        if entry["event"] in ("queued", "finished"):
            ax.axvline(entry["at"] - origin, color="#333333", linewidth=0.8, linestyle=":")
    ax.set_yticks(range(len(ROWS)), ROWS)
    ax.set_ylim(len(ROWS) - 0.5, -0.5)
    ax.set_xlabel("seconds since the job was queued")
    ax.set_title(title)
    if shown:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return ax


def waited_summary(entries: list[dict[str, Any]]) -> str | None:
    """Why the job waited, in one line (the panel's): how many chunks of each class ran while
    it waited, and the calibrations and holds it sat through; None when nothing held it up."""
    behind: dict[str, int] = {}
    device: dict[str, float] = {}
    for entry in entries:
        kind = entry["event"]
        if kind == "waited_behind":
            behind[entry["by_class"]] = behind.get(entry["by_class"], 0) + entry["chunks"]
        elif kind in ROW_OF and kind != "chunk":
            device[kind] = device.get(kind, 0.0) + entry["until"] - entry["at"]
    parts = [f"{n} {name} chunk{'s' if n != 1 else ''}" for name, n in behind.items()]
    parts += [f"{kind} ({format_duration(seconds)})" for kind, seconds in device.items()]
    return f"waited for {', '.join(parts)}" if parts else None
