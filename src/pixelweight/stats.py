r"""Statistics across seeds: confidence intervals and computed verdicts.

Every verdict the book prints comes from :func:`verdict` (a claimed direction) or
:func:`equivalence_verdict` (a claim of non-inferiority), applied to per-seed paired
differences the notebook computed, never typed by hand. The rule, for the two-sided
95% Student-t interval :math:`[l, h]` of the mean paired difference :math:`\bar d` over
:math:`n` seeds, oriented so that the claim says "positive":

- **supported**: the whole interval lies on the claimed side, past the margin
  (:math:`l > m`);
- **contradicted**: the whole interval lies on the other side (:math:`h < m`; for
  non-inferiority with tolerance :math:`t`, :math:`h < -t`);
- **inconclusive**: anything else — the data cannot tell, at this number of seeds;
- **not testable at this scale**: the quantity is not defined (NaN) here.

Beside each verdict the book prints how many seeds point the claimed way
(:func:`seeds_in_direction`) and the smallest effect the design could detect
(:func:`detectable_effect`), so that "inconclusive" says how large an effect it rules out.
A composite claim combines the verdicts of its parts by :func:`combine_verdicts`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from ._validation import check_float

# The verdicts, in the order the book counts them (documented in book/api/stats.md).
VERDICTS = ("supported", "contradicted", "inconclusive", "not testable at this scale")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean with a two-sided Student-t confidence interval over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    #: The per-seed values (paired differences) the interval was computed from, when known.
    values: tuple = dataclasses.field(default=(), compare=False, repr=False)

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
    kept = tuple(float(v) for v in arr)
    if arr.size < 2:
        return Interval(mean, mean, mean, 1, confidence, kept)
    half = float(stats.t.ppf(0.5 + confidence / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return Interval(mean, mean - half, mean + half, int(arr.size), confidence, kept)


def paired_difference_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """Interval of the mean of ``a[i] - b[i]`` (the same seed and data for both runs)."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.size} and {b.size}")
    return mean_ci(a - b, confidence)


def _oriented(difference: Interval, direction: int):
    if not isinstance(difference, Interval):
        raise TypeError(f"difference must be an Interval, got {type(difference).__name__}")
    if isinstance(direction, bool) or direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    low, mean, high = (direction * v for v in (difference.low, difference.mean, difference.high))
    return min(low, high), mean, max(low, high)


def verdict(difference: Interval, direction: int = +1, margin: float = 0.0) -> str:
    """The verdict on a claim that the difference is ``direction`` (+1 up, -1 down), past
    ``margin``.

    - ``supported``: the whole interval lies past ``margin`` in the claimed direction;
    - ``contradicted``: the whole interval lies short of ``margin`` (on the other side);
    - ``inconclusive``: the interval straddles ``margin``, or a single seed gave no interval;
    - ``not testable at this scale``: the difference is NaN (the quantity is not defined).

    For a claim of *no worse than* ("at competitive mIoU"), use :func:`equivalence_verdict`.

    Examples
    --------
    >>> from pixelweight.stats import paired_difference_ci, verdict
    >>> verdict(paired_difference_ci([0.52, 0.55, 0.54], [0.40, 0.41, 0.45]))
    'supported'
    >>> verdict(paired_difference_ci([0.52, 0.40, 0.54], [0.50, 0.41, 0.45]))
    'inconclusive'
    """
    margin = check_float(margin, "margin", minimum=0.0)
    low, mean, high = _oriented(difference, direction)
    if math.isnan(mean):
        return "not testable at this scale"
    if difference.n < 2:
        return "inconclusive"
    if low > margin:
        return "supported"
    if high < margin:
        return "contradicted"
    return "inconclusive"


def equivalence_verdict(difference: Interval, tolerance: float) -> str:
    """Verdict on "no worse than by more than ``tolerance``" (non-inferiority):
    ``supported`` when the whole interval lies above ``-tolerance``, ``contradicted`` when
    it lies wholly below, ``inconclusive`` otherwise (and with a single seed)."""
    tolerance = check_float(tolerance, "tolerance", minimum=0.0)
    low, mean, high = _oriented(difference, +1)
    if math.isnan(mean):
        return "not testable at this scale"
    if difference.n < 2:
        return "inconclusive"
    if low > -tolerance:
        return "supported"
    if high < -tolerance:
        return "contradicted"
    return "inconclusive"


def seeds_in_direction(difference: Interval, direction: int = +1, margin: float = 0.0):
    """``(k, n)``: how many of the ``n`` per-seed differences lie past ``margin`` in the
    claimed direction (``None`` when the interval does not carry its values)."""
    _oriented(difference, direction)
    if not difference.values:
        return None
    k = sum(direction * v > margin for v in difference.values)
    return int(k), len(difference.values)


def detectable_effect(difference: Interval, power: float = 0.8) -> float:
    r"""The smallest true mean difference this design detects with probability ``power``:
    :math:`(t_{1-\alpha/2,\,n-1} + t_{\mathrm{power},\,n-1})\, s/\sqrt{n}`, with :math:`s/\sqrt n`
    read from the interval's half-width (:math:`\alpha = 1 -` the interval's confidence). NaN
    with fewer than two seeds. It says what an "inconclusive" rules out: effects at least this
    large would probably have been seen.

    Examples
    --------
    >>> from pixelweight.stats import Interval, detectable_effect
    >>> round(detectable_effect(Interval(0.0, -1.0, 1.0, 5, 0.95)), 3)  # half-width 1, 5 seeds
    1.339
    """
    from scipy import stats

    power = check_float(power, "power", minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False)
    if not isinstance(difference, Interval):
        raise TypeError(f"difference must be an Interval, got {type(difference).__name__}")
    if difference.n < 2:
        return float("nan")
    dof = difference.n - 1
    t_crit = float(stats.t.ppf(0.5 + difference.confidence / 2, dof))
    standard_error = (difference.high - difference.low) / 2 / t_crit
    return float((t_crit + stats.t.ppf(power, dof)) * standard_error)


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """The verdict of a composite claim from the verdicts of its parts (the one rule every
    chapter uses): a claim that needs all its parts holds when all are supported; one
    contradicted part contradicts it; a part that cannot be tested makes it untestable;
    anything else is inconclusive."""
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("a composite claim needs at least one part")
    for v in verdicts:
        if v not in VERDICTS:
            raise ValueError(f"verdict {v!r} is not one of {', '.join(VERDICTS)}")
    for decisive in ("contradicted", "not testable at this scale"):
        if decisive in verdicts:
            return decisive
    return "supported" if all(v == "supported" for v in verdicts) else "inconclusive"
