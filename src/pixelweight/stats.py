"""Statistics across seeds: confidence intervals and computed verdicts.

Every verdict the book prints ("reproduced", "partly", "not reproduced") comes from
:func:`verdict`, applied to per-seed numbers the notebook computed, never typed by hand.
With a handful of seeds the intervals are wide; the book says so rather than hiding it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from ._validation import check_float

VERDICTS = ("reproduced", "partly reproduced", "not reproduced", "not testable at this scale")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean with a two-sided Student-t confidence interval over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    def __str__(self) -> str:
        return self.format()

    def format(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """E.g. ``0.512 [0.480, 0.544]`` (``scale=100, unit=" pp"`` for percentages)."""
        m, lo, hi = (_fixed(scale * v, digits) for v in (self.mean, self.low, self.high))
        if self.n < 2:
            return f"{m}{unit} (n=1, no interval)"
        return f"{m}{unit} [{lo}, {hi}]"


def _fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals; one that rounds to zero prints as 0.000, not -0.000."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _values(values: Sequence[float], name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and Student-t confidence interval: ``mean ± t_{n-1} · sd / sqrt(n)``.

    One value gives a degenerate interval (low = high = mean) that
    :meth:`Interval.format` labels as such.
    """
    from scipy import stats

    confidence = check_float(confidence, "confidence", minimum=0.0, maximum=1.0,
                             min_inclusive=False, max_inclusive=False)
    arr = _values(values)
    mean = float(arr.mean())
    if arr.size < 2:
        return Interval(mean, mean, mean, 1, confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return Interval(mean, mean - half, mean + half, int(arr.size), confidence)


def paired_difference_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """Interval of the mean of ``a[i] - b[i]`` (the same seed and data for both runs)."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.size} and {b.size}")
    return mean_ci(a - b, confidence)


def verdict(difference: Interval, direction: int = +1, margin: float = 0.0) -> str:
    """The verdict on a claim that the difference is ``direction`` (+1 up, -1 down).

    - ``reproduced``: the whole interval lies beyond ``margin`` in the claimed direction;
    - ``partly reproduced``: the mean is in the claimed direction but the interval
      reaches back past the margin (too few seeds or too small an effect to be sure);
    - ``not reproduced``: the mean is not in the claimed direction.

    For a claim of *no difference* ("at competitive mIoU"), use :func:`equivalence_verdict`.
    """
    if isinstance(direction, bool) or direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    margin = check_float(margin, "margin", minimum=0.0)  # NaN would compare False: "not reproduced"
    low, mean, high = (direction * v for v in (difference.low, difference.mean, difference.high))
    low, high = min(low, high), max(low, high)
    if difference.n >= 2 and low > margin:
        return "reproduced"
    if mean > margin:
        return "partly reproduced"
    return "not reproduced"


def equivalence_verdict(difference: Interval, tolerance: float) -> str:
    """Verdict on "no worse than by more than ``tolerance``": reproduced when the whole
    interval lies above ``-tolerance``, partly when only the mean does."""
    tolerance = check_float(tolerance, "tolerance", minimum=0.0)
    if difference.n >= 2 and difference.low > -tolerance:
        return "reproduced"
    if difference.mean > -tolerance:
        return "partly reproduced"
    return "not reproduced"


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """The verdict of a composite claim from the verdicts of its parts (the one rule every
    chapter uses): all parts agree → that verdict; any part "not testable at this scale" →
    not testable; any part "not reproduced" → not reproduced; otherwise partly reproduced."""
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("a composite claim needs at least one part")
    for v in verdicts:
        if v not in VERDICTS:
            raise ValueError(f"verdict {v!r} is not one of {', '.join(VERDICTS)}")
    if len(set(verdicts)) == 1:
        return verdicts[0]
    for decisive in ("not testable at this scale", "not reproduced"):
        if decisive in verdicts:
            return decisive
    return "partly reproduced"
