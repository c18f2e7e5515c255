"""The metrics' own clock (``MetricsSettings.time_scale``): compressed load, run by a real
worker, is stored and read back spread over the longer span."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import taskflow
from taskflow.config import MetricsSettings, Resolution
from taskflow.metrics.clock import metrics_ms, wall_ms
from tests.apps.shared import fast_worker

ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)


@given(
    scale=st.floats(min_value=0.01, max_value=100_000, allow_nan=False),
    wall=st.integers(min_value=1_700_000_000_000, max_value=1_900_000_000_000),
)
def test_the_clock_and_its_inverse(scale: float, wall: int) -> None:
    settings = MetricsSettings(time_scale=scale, time_origin=ORIGIN)
    assert abs(wall_ms(settings, metrics_ms(settings, wall)) - wall) <= 1 + 1 / scale
    assert metrics_ms(MetricsSettings(), wall) == wall  # wall time when not scaled


def test_a_scale_needs_an_aware_origin() -> None:
    with pytest.raises(ValidationError, match="time_scale=60 needs time_origin"):
        MetricsSettings(time_scale=60)
    with pytest.raises(ValidationError, match="time_origin must be timezone-aware"):
        MetricsSettings(time_scale=60, time_origin=datetime(2026, 1, 1))


@pytest.mark.asyncio
async def test_compressed_load_reads_back_spread_over_the_longer_span(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    scale = 600.0  # ten minutes of metrics per wall second
    metrics = MetricsSettings(
        flush_interval=timedelta(milliseconds=200),
        resolutions=(Resolution(bucket=timedelta(minutes=1), retention=timedelta(days=1)),),
        time_scale=scale,
        time_origin=datetime.now(UTC),
    )
    app = named_app(metrics=metrics, worker=fast_worker())

    @app.task
    async def tick(i: int) -> int:
        return i

    async with app, app.worker():
        for second in range(3):  # 3 wall seconds: half an hour of metrics time
            await (await tick.enqueue(second)).result(timeout=10)
            await anyio.sleep(1)
        await anyio.sleep(0.5)  # the last flush
        hour = await app.metrics.summary(task="tick", since=timedelta(hours=1))
        recent = await app.metrics.summary(task="tick", since=timedelta(minutes=5))
    assert hour.count == 3
    assert recent.count == 0  # the last job finished over ten metric minutes ago
    assert hour.until - hour.since >= timedelta(minutes=59)
