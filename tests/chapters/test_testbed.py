"""The testbed chapter module (pixelweight.chapters.testbed)."""

import types

import numpy as np
import pytest

from pixelweight.chapters import Converged, testbed


def test_baseline_stage_is_what_the_book_ran():
    ci = testbed.setup("baseline", "ci").scale
    assert (ci.profile.steps, len(ci.profile.seeds), ci.data.size, ci.model.width) == (270, 3, 64, 16)
    assert dict(ci.data.options) == {"imbalance": 1.0}
    full = testbed.setup("baseline", "full").scale
    assert len(full.profile.seeds) >= 5 and full.data == ci.data and full.model == ci.model
    assert full.train["plateau_metric"] == "miou" and full.profile.steps * 0.25 // full.profile.eval_every >= 3
    assert testbed.setup("baseline", "ci").run_names() == ["ch0-ce"]


@pytest.fixture(scope="module")
def ci_setup():
    return testbed.setup("baseline", "ci")


def _runs(setup, gaps):
    """Fake CE runs whose frequent digits have recall 0.8 and whose rare digits 0.8 - gap."""
    freq = setup.splits.train.class_pixel_frequencies()
    digits = [int(c) for c in np.argsort(-freq[1:], kind="stable") + 1]
    out = []
    for seed, gap in enumerate(gaps):
        recall = np.full(setup.num_classes, 0.8)
        recall[digits[5:]] = 0.8 - gap
        metrics = {f"test_{m}": list(recall) for m in ("recall", "iou", "precision")}
        out.append(types.SimpleNamespace(metrics=metrics, seed=seed, record=types.SimpleNamespace(seed=seed)))
    return {"CE": out}


def test_recall_gap_splits_the_digits_by_training_frequency(ci_setup):
    gap = testbed.rare_recall_gap(ci_setup, _runs(ci_setup, [0.3, 0.2, 0.4]))
    freq = ci_setup.splits.train.class_pixel_frequencies()
    names = ci_setup.class_names
    assert len(gap.frequent) == len(gap.rare) == 5 and not set(gap.frequent) & set(gap.rare)
    assert min(freq[names.index(n)] for n in gap.frequent) >= max(freq[names.index(n)] for n in gap.rare)
    assert gap.gap.mean == pytest.approx(0.3) and gap.gap.n == 3
    assert gap.recall_frequent == pytest.approx((0.8, 0.8, 0.8))
    with pytest.raises(ValueError, match="two CE runs"):
        testbed.rare_recall_gap(ci_setup, {"CE": _runs(ci_setup, [0.3])["CE"]})
    with pytest.raises(ValueError, match="stage .baseline."):
        testbed.rare_recall_gap(__import__("pixelweight.chapters.recall").chapters.recall.setup("experiments", "ci"),
                                _runs(ci_setup, [0.3, 0.2]))
    # a class absent from the test split (recall undefined) is left out of its half's mean ...
    nan = _runs(ci_setup, [0.3, 0.2])
    nan["CE"][0].metrics["test_recall"][gap_index(ci_setup, gap.rare[0])] = float("nan")
    assert testbed.rare_recall_gap(ci_setup, nan).gap.mean == pytest.approx(0.25)
    # ... but a half with no defined recall at all has no mean: an error, not a number
    for name in gap.rare:
        nan["CE"][0].metrics["test_recall"][gap_index(ci_setup, name)] = float("nan")
    with pytest.raises(ValueError, match="no defined recall"):
        testbed.rare_recall_gap(ci_setup, nan)


def gap_index(setup, name):
    return setup.class_names.index(name)


def test_baseline_claim_is_judged_from_the_runs(ci_setup):
    table = testbed.baseline_claims(ci_setup, _runs(ci_setup, [0.3, 0.2, 0.4]))
    (claim,) = table.claims
    assert claim.verdict == "supported" and claim.source == "ours" and table.chapter == "00_testbed"
    assert not claim.primary  # the testbed reproduces no paper
    assert "64x64 scenes, width-16 U-Net" in table.scope and table.scale == "DigitScenes 64x64, width-16 U-Net"
    assert testbed.baseline_claims(ci_setup, _runs(ci_setup, [-0.1, 0.05, -0.2])).claims[0].verdict == "inconclusive"
    assert testbed.baseline_claims(ci_setup, _runs(ci_setup, [-0.1, -0.12, -0.08])).claims[0].verdict == "contradicted"


def test_converged_claims_without_records_say_so(monkeypatch, tmp_path):
    shown = []
    monkeypatch.setattr("pixelweight.book.markdown", shown.append)
    monkeypatch.setenv("PIXELWEIGHT_RESULTS", str(tmp_path))
    full = testbed.setup("baseline", "full")
    out = full.show_converged(testbed.baseline_claims, str(tmp_path))
    assert isinstance(out, Converged) and not out.available and out.missing == ("CE",)
    assert "make results CHAPTER=00_testbed" in shown[0] and out.text()["plateau"] == "—"
    with pytest.raises(ValueError, match="full setup"):
        testbed.setup("baseline", "ci").converged(testbed.baseline_claims)
