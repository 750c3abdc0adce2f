import math

import numpy as np
import pytest
from scipy import stats as sps

from pixelweight.stats import (
    VERDICTS,
    Interval,
    combine_verdicts,
    detectable_effect,
    equivalence_verdict,
    mean_ci,
    paired_difference_ci,
    seeds_in_direction,
    verdict,
)


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
    assert verdict(Interval(1.0, 0.5, 1.5, 3, 0.95)) == "supported"
    assert verdict(Interval(1.0, -0.5, 2.5, 3, 0.95)) == "inconclusive"  # the mean alone decides nothing
    assert verdict(Interval(-0.2, -1.0, 0.5, 3, 0.95)) == "inconclusive"
    assert verdict(Interval(-1.0, -2.0, -0.5, 3, 0.95)) == "contradicted"  # wholly on the other side
    assert verdict(Interval(-1.0, -2.0, -0.5, 3, 0.95), direction=-1) == "supported"
    assert verdict(Interval(0.3, 0.2, 0.4, 3, 0.95), margin=0.25) == "inconclusive"
    assert verdict(Interval(0.2, 0.1, 0.24, 3, 0.95), margin=0.25) == "contradicted"  # surely below the margin
    assert verdict(Interval(1.0, 1.0, 1.0, 1, 0.95)) == "inconclusive"  # one seed never suffices
    assert verdict(Interval(float("nan"), float("nan"), float("nan"), 3, 0.95)) == "not testable at this scale"
    assert equivalence_verdict(Interval(-0.01, -0.02, 0.0, 3, 0.95), tolerance=0.03) == "supported"
    assert equivalence_verdict(Interval(-0.01, -0.05, 0.03, 3, 0.95), tolerance=0.03) == "inconclusive"
    assert equivalence_verdict(Interval(-0.05, -0.06, -0.04, 3, 0.95), tolerance=0.03) == "contradicted"


def test_no_true_effect_is_mostly_inconclusive():
    """The rule's error rates at 3 seeds with no true effect (the issue's complaint about the
    old rule: 'not reproduced' half the time): supported or contradicted each about 2.5%."""
    rng = np.random.default_rng(0)
    counts = {v: 0 for v in VERDICTS}
    for _ in range(4000):
        counts[verdict(mean_ci(rng.normal(0.0, 1.0, 3)))] += 1
    assert 0.01 < counts["supported"] / 4000 < 0.045 and 0.01 < counts["contradicted"] / 4000 < 0.045
    assert counts["inconclusive"] / 4000 > 0.9


def test_seeds_in_direction_and_detectable_effect():
    iv = paired_difference_ci([0.3, 0.1, -0.05, 0.2], [0.0, 0.0, 0.0, 0.0])
    assert iv.values == (0.3, 0.1, -0.05, 0.2)
    assert seeds_in_direction(iv) == (3, 4) and seeds_in_direction(iv, direction=-1) == (1, 4)
    assert seeds_in_direction(iv, margin=0.15) == (2, 4)
    assert seeds_in_direction(Interval(1.0, 0.5, 1.5, 3, 0.95)) is None  # built without its values
    # (t_.975 + t_.8) * se with 4 seeds; se from the half-width
    se = (iv.high - iv.low) / 2 / sps.t.ppf(0.975, 3)
    assert detectable_effect(iv) == pytest.approx((sps.t.ppf(0.975, 3) + sps.t.ppf(0.8, 3)) * se)
    assert detectable_effect(iv, power=0.9) > detectable_effect(iv)
    assert np.isnan(detectable_effect(mean_ci([1.0])))
    with pytest.raises(ValueError, match="power"):
        detectable_effect(iv, power=1.0)


def test_combine_verdicts():
    assert combine_verdicts(["supported", "supported"]) == "supported"
    assert combine_verdicts(["supported", "inconclusive"]) == "inconclusive"
    assert combine_verdicts(["supported", "contradicted"]) == "contradicted"
    assert combine_verdicts(["inconclusive", "not testable at this scale"]) == "not testable at this scale"
    assert combine_verdicts(["contradicted", "not testable at this scale"]) == "contradicted"
    with pytest.raises(ValueError, match="at least one"):
        combine_verdicts([])
    with pytest.raises(ValueError, match="not one of"):
        combine_verdicts(["reproduced"])


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
