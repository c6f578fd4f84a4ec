"""How a time crosses the wire: RFC 3339 in UTC (``…Z``), the form Warden clients parse.

One formatter for every UTC time this project writes, in a document or in a message; a
date-time without an offset is UTC, as Warden reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, overload

TimeSpec = Literal["auto", "hours", "minutes", "seconds", "milliseconds", "microseconds"]


@overload
def iso_time(moment: float | datetime, sep: str = "T", timespec: TimeSpec = "auto") -> str: ...
@overload
def iso_time(moment: None, sep: str = "T", timespec: TimeSpec = "auto") -> None: ...
def iso_time(
    moment: float | datetime | None, sep: str = "T", timespec: TimeSpec = "auto"
) -> str | None:
    """A Unix time or a date-time as RFC 3339 in UTC ending in ``Z``; ``sep`` and ``timespec``
    as :meth:`datetime.isoformat` takes them (a message may read ``2026-01-05 14:00Z``)."""
    if moment is None:
        return None
    if isinstance(moment, datetime):
        utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    else:
        utc = datetime.fromtimestamp(moment, UTC)
    return utc.isoformat(sep, timespec).removesuffix("+00:00") + "Z"


@overload
def unix_time(moment: datetime) -> float: ...
@overload
def unix_time(moment: None) -> None: ...
def unix_time(moment: datetime | None) -> float | None:
    """A date-time as a Unix time; one without an offset is UTC, as Warden reads it."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
