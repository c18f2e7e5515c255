"""Shared input handling for the numerical insights: finite points, sorted by time."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

Series: TypeAlias = "Sequence[float] | NDArray[Any]"
"""What the functions take for times and values: any sequence of numbers, or an array."""

_EXTRA = ("numpy", "scipy", "statsmodels")


def require_extra() -> None:
    """Raise ImportError naming the extra when numpy, scipy or statsmodels is missing."""
    missing = [name for name in _EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"taskflow.insights needs {', '.join(missing)}: pip install 'taskflow-redis[insights]'"
        )


def finite_points(times: Series, values: Series) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The points whose time and value are both finite, sorted by time (stable)."""
    import numpy as np

    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if t.shape != y.shape or t.ndim != 1:
        raise ValueError(
            f"times and values must be two sequences of one length, got {t.shape} and {y.shape}"
        )
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    order = np.argsort(t, kind="stable")
    return t[order], y[order]
