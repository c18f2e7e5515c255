"""Wall-clock time as taskflow stores it: integer milliseconds since the epoch, UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ("ms_to_datetime", "now_ms")


def now_ms() -> int:
    """Milliseconds since the epoch, as stored in Redis scores and records."""
    return int(time.time() * 1000)


def ms_to_datetime(ms: int) -> datetime:
    """An aware UTC datetime from epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
