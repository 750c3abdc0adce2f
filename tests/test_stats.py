import math

import numpy as np
import pytest
from scipy import stats as sps

from pixelweight.stats import Interval, equivalence_verdict, mean_ci, paired_difference_ci, verdict


def test_mean_ci_known_value():
    # values 1,2,3: mean 2, sd 1, t_{0.975,2} = 4.302652729911275
    iv = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.low == pytest.approx(2 - half, rel=1e-9) and iv.high == pytest.approx(2 + half, rel=1e-9)


def test_mean_ci_matches_scipy_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(size=7)
    lo, hi = sps.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    iv = mean_ci(x, confidence=0.9)
    assert (iv.low, iv.high) == pytest.approx((lo, hi), rel=1e-12)


def test_single_value_and_format():
    iv = mean_ci([0.5])
    assert (iv.low, iv.high, iv.n) == (0.5, 0.5, 1)
    assert "no interval" in iv.format()
    assert mean_ci([0.1, 0.2]).format(digits=1, scale=100, unit=" %").startswith("15.0 %")


def test_format_has_no_negative_zero():
    iv = paired_difference_ci([0.5, 0.6001, 0.7], [0.5002, 0.6, 0.7])  # mean -3e-5 rounds to zero
    assert iv.format(3).startswith("0.000 [")
    assert mean_ci([-0.2, -0.1]).format(2).startswith("-0.15 [")  # real negatives keep their sign


def test_paired_difference():
    iv = paired_difference_ci([3, 4, 5], [1, 2, 3])
    assert iv.mean == 2 and iv.low == iv.high == 2  # constant difference: zero spread
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference_ci([1, 2], [1])


def test_verdicts():
    assert verdict(Interval(1.0, 0.5, 1.5, 3, 0.95)) == "reproduced"
    assert verdict(Interval(1.0, -0.5, 2.5, 3, 0.95)) == "partly reproduced"
    assert verdict(Interval(-1.0, -2.0, 0.5, 3, 0.95)) == "not reproduced"
    assert verdict(Interval(-1.0, -2.0, -0.5, 3, 0.95), direction=-1) == "reproduced"
    assert verdict(Interval(0.3, 0.2, 0.4, 3, 0.95), margin=0.25) == "partly reproduced"
    assert verdict(Interval(1.0, 1.0, 1.0, 1, 0.95)) == "partly reproduced"  # one seed never suffices
    assert equivalence_verdict(Interval(-0.01, -0.02, 0.0, 3, 0.95), tolerance=0.03) == "reproduced"
    assert equivalence_verdict(Interval(-0.01, -0.05, 0.03, 3, 0.95), tolerance=0.03) == "partly reproduced"
    assert equivalence_verdict(Interval(-0.05, -0.06, -0.04, 3, 0.95), tolerance=0.03) == "not reproduced"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mean_ci([]), "non-empty"),
        (lambda: mean_ci([[1, 2]]), "1-D"),
        (lambda: mean_ci([1, float("nan")]), "finite"),
        (lambda: mean_ci([1, 2], confidence=1.0), "confidence"),
        (lambda: verdict(Interval(0, 0, 0, 2, 0.95), direction=0), "direction"),
        (lambda: verdict(Interval(0, 0, 0, 2, 0.95), margin=-1), "margin"),
        (lambda: equivalence_verdict(Interval(0, 0, 0, 2, 0.95), tolerance=-1), "tolerance"),
        # NaN used to pass (every comparison with it is False) and give "not reproduced"
        (lambda: verdict(Interval(0.3, 0.2, 0.4, 3, 0.95), margin=float("nan")), "margin must not be NaN"),
        (lambda: verdict(Interval(0.3, 0.2, 0.4, 3, 0.95), margin=float("inf")), "margin must be finite"),
        (lambda: equivalence_verdict(Interval(0, 0, 0, 2, 0.95), tolerance=float("nan")), "tolerance must not be NaN"),
        (lambda: equivalence_verdict(Interval(0, 0, 0, 2, 0.95), tolerance=float("inf")), "tolerance must be finite"),
        (lambda: mean_ci([1, 2], confidence=float("nan")), "confidence must not be NaN"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
