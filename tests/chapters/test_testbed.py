"""The testbed chapter module (pixelweight.chapters.testbed)."""

from pixelweight.chapters import testbed
from pixelweight.stats import Interval


def test_baseline_stage_is_what_the_book_ran():
    ci = testbed.setup("baseline", "ci").scale
    assert (ci.profile.steps, len(ci.profile.seeds), ci.data.size, ci.model.width) == (450, 3, 64, 16)
    assert dict(ci.data.options) == {"imbalance": 1.0}
    full = testbed.setup("baseline", "full").scale
    assert len(full.profile.seeds) >= 5 and full.data == ci.data and full.model == ci.model
    assert full.train["plateau_metric"] == "miou" and full.profile.steps * 0.25 // full.profile.eval_every >= 3
    assert testbed.setup("baseline", "ci").run_names() == ["ch0-ce"]


def test_baseline_claim_is_judged_from_the_recall_gap():
    setup = testbed.setup("baseline", "ci")
    table = testbed.baseline_claims(setup, recall_gap=Interval(0.3, 0.1, 0.5, 3, 0.95))
    (claim,) = table.claims
    assert claim.verdict == "supported" and claim.source == "ours" and table.chapter == "00_testbed"
    assert "64x64 scenes, width-16 U-Net" in table.scope
    assert testbed.baseline_claims(setup, Interval(-0.1, -0.2, 0.05, 3, 0.95)).claims[0].verdict == "inconclusive"
    assert testbed.baseline_claims(setup, Interval(-0.1, -0.2, -0.05, 3, 0.95)).claims[0].verdict == "contradicted"
