"""The numerical core of taskflow's insights, in one namespace: trends (Theil-Sen,
Mann-Kendall), forecasts with prediction intervals (Holt / ETS), threshold crossings and
worker-configuration advice (Erlang C). Pure functions over plain sequences: no Redis, no
taskflow runtime. numpy, scipy and statsmodels (the ``insights`` extra) are imported when
a function needs them, so importing this module is cheap.
"""

from __future__ import annotations

from .forecast import Crossing, Forecast, forecast, time_to_threshold
from .queueing import Advice, advise, erlang_c, mean_wait
from .trend import Trend, trend

__all__ = (
    "Advice",
    "Crossing",
    "Forecast",
    "Trend",
    "advise",
    "erlang_c",
    "forecast",
    "mean_wait",
    "time_to_threshold",
    "trend",
)
