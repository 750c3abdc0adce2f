"""Claims as objects: validation, the rendered claims table, the recorded verdicts."""

from __future__ import annotations

import json

import pytest

from pixelweight.book import DETAIL_FIELDS, VERDICTS_FILE, read_verdicts, record_verdicts
from pixelweight.claims import SOURCES, VERDICT_LABELS, Claim, ClaimsTable, verdict_badge
from pixelweight.stats import VERDICTS, Interval, paired_difference_ci


def _interval(mean=0.111, low=0.028, high=0.194):
    return Interval(mean, low, high, 3, 0.95)


def _claim(**kw):
    base = dict(text="recall loss raises mean accuracy over CE", source="abstract",
                ran="recall (batch) vs CE, mean accuracy", verdict="supported", effect=_interval())
    base.update(kw)
    return Claim(**base)


def test_every_verdict_has_a_label_that_reads_without_colour():
    assert set(VERDICT_LABELS) == set(VERDICTS)
    symbols = [symbol for _, symbol in VERDICT_LABELS.values()]
    assert len(set(symbols)) == len(symbols)  # told apart without colour
    for verdict in VERDICTS:
        badge = verdict_badge(verdict)
        assert badge.startswith("{bdg-") and badge.endswith(f" {verdict}`")  # the words are in the label
    assert verdict_badge("supported") == "{bdg-success}`✓ supported`"
    with pytest.raises(ValueError, match="not one of"):
        verdict_badge("maybe")


def test_effect_text():
    assert _claim().effect_text() == "+0.111 [0.028, 0.194]"
    assert _claim(effect=_interval(-0.09, -0.187, 0.007)).effect_text() == "-0.090 [-0.187, 0.007]"
    assert _claim(effect=_interval(0.0, -0.01, 0.01)).effect_text() == "0.000 [-0.010, 0.010]"
    assert _claim(effect=_interval(0.0004, -0.01, 0.01)).effect_text() == "0.000 [-0.010, 0.010]"  # not +0.000
    assert _claim(effect=_interval(), digits=2, detail="+33% relative").effect_text() == "+0.11 [0.03, 0.19] (+33% relative)"
    assert _claim(effect="max relative gap 1.2e-05").effect_text() == "max relative gap 1.2e-05"
    assert _claim(effect=None).effect_text() == "—"
    undefined = Interval(float("nan"), float("nan"), float("nan"), 3, 0.95)
    assert _claim(effect=undefined, detail="gap closed on average: -33%").effect_text() == "— (gap closed on average: -33%)"
    computed = paired_difference_ci([0.5, 0.6, 0.7], [0.4, 0.45, 0.5])
    assert _claim(effect=computed).effect_text() == "+" + computed.format(3)


@pytest.mark.parametrize(("kw", "error", "match"), [
    ({"source": "paper"}, ValueError, "source 'paper' is not one of"),
    ({"verdict": "yes"}, ValueError, "verdict 'yes' is not one of"),
    ({"text": ""}, ValueError, "text must be one non-empty line"),
    ({"text": "two\nlines"}, ValueError, "text must be one"),
    ({"ran": 3}, TypeError, "ran must be a str"),
    ({"effect": 0.5}, TypeError, "effect must be an Interval"),
    ({"digits": -1}, ValueError, "digits must be an int"),
    ({"record": 1}, TypeError, "record must be a bool"),
])
def test_claim_rejects_bad_fields(kw, error, match):
    with pytest.raises(error, match=match):
        _claim(**kw)


def test_table_validation():
    with pytest.raises(ValueError, match="at least one claim"):
        ClaimsTable("02_recall", [], budget="ci")
    with pytest.raises(ValueError, match="listed twice"):
        ClaimsTable("02_recall", [_claim(), _claim()], budget="ci")
    with pytest.raises(TypeError, match="Claim objects"):
        ClaimsTable("02_recall", [{"claim": "x"}], budget="ci")
    with pytest.raises(ValueError, match="chapter must be"):
        ClaimsTable("../x", [_claim()], budget="ci")
    with pytest.raises(ValueError, match="section must be a heading anchor"):
        ClaimsTable("02_recall", [_claim()], budget="ci", section="Claims at this scale")
    with pytest.raises(ValueError, match="budget must be one"):
        ClaimsTable("02_recall", [_claim()], budget="")


def test_markdown_table_one_row_per_claim():
    table = ClaimsTable("02_recall", budget="`ci` profile (early training): 340 steps, 3 seeds", claims=[
        _claim(label="(a)"),
        _claim(text="inverse-frequency CE gains recall | loses precision", source="ours", verdict="contradicted",
               effect="Δ acc. = 0.2; Δ prec. = -0.1", label="(c)"),
    ])
    lines = table.markdown().splitlines()
    assert lines[0] == "Tested at: `ci` profile (early training): 340 steps, 3 seeds."
    assert lines[2] == "| Claim | Source | What we ran | Effect [95% CI] | Verdict |"
    assert lines[3] == "|---|---|---|---|---|"
    assert lines[4] == ("| (a) recall loss raises mean accuracy over CE | [abstract] | recall (batch) vs CE, mean accuracy "
                        "| +0.111 [0.028, 0.194] | {bdg-success}`✓ supported` |")
    # a | inside a cell is escaped: the row keeps its five cells
    assert lines[5].startswith("| (c) inverse-frequency CE gains recall \\| loses precision | [ours] |")
    assert lines[5].endswith("| {bdg-danger}`✗ contradicted` |")
    assert len(lines) == 6


def test_record_writes_the_scorecard_fields(tmp_path):
    table = ClaimsTable("04_lmp", budget="`ci` profile: 300 steps, 3 seeds", section="claims-at-this-scale",
                        scale="DigitScenes 64x64, width-16 U-Net", claims=[
        _claim(text="LMP improves mIoU over CE", label="(a)"),
        _claim(text="LMP beats focal loss", source="ours", verdict="contradicted", record=False),
    ])
    path = table.record(tmp_path)
    assert path == tmp_path / VERDICTS_FILE
    lines = read_verdicts(tmp_path)
    assert [line["claim"] for line in lines] == ["LMP improves mIoU over CE"]  # record=False is shown, not recorded
    line = lines[0]
    assert (line["chapter"], line["verdict"], line["source"], line["section"], line["label"]) == (
        "04_lmp", "supported", "abstract", "claims-at-this-scale", "(a)")
    assert line["effect"] == "+0.111 [0.028, 0.194]"
    assert line["budget"] == "`ci` profile: 300 steps, 3 seeds"
    assert line["scale"] == "DigitScenes 64x64, width-16 U-Net"  # every row states its scope
    assert set(DETAIL_FIELDS) <= set(line)
    # recording again replaces, and a table of unrecorded rows records nothing
    table.record(tmp_path)
    assert len(read_verdicts(tmp_path)) == 1
    only_shown = ClaimsTable("04_lmp", [_claim(record=False)], budget="ci")
    assert only_shown.record(tmp_path / "other") is None
    assert not (tmp_path / "other").exists()


def test_record_verdicts_checks_details(tmp_path):
    with pytest.raises(ValueError, match="unknown fields"):
        record_verdicts(tmp_path, "02_recall", {"c": "supported"}, details={"c": {"colour": "green"}})
    with pytest.raises(ValueError, match="details for a claim without a verdict"):
        record_verdicts(tmp_path, "02_recall", {"c": "supported"}, details={"d": {"source": "ours"}})
    with pytest.raises(TypeError, match="must be a mapping"):
        record_verdicts(tmp_path, "02_recall", {"c": "supported"}, details={"c": "ours"})
    with pytest.raises(ValueError, match="source must be one line"):
        record_verdicts(tmp_path, "02_recall", {"c": "supported"}, details={"c": {"source": 3}})
    (tmp_path / VERDICTS_FILE).write_text(json.dumps(
        {"chapter": "02_recall", "claim": "c", "verdict": "supported", "effect": "a\nb"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="effect must be one line"):
        read_verdicts(tmp_path)


def test_sources_are_the_papers_md_tags():
    assert SOURCES == ("abstract", "code", "paper, unverified", "derived", "ours")


def test_evidence_prints_the_seeds_and_the_detectable_effect():
    from pixelweight.claims import Evidence
    from pixelweight.stats import paired_difference_ci

    d = paired_difference_ci([0.5, 0.6, 0.55, 0.58, 0.52], [0.4, 0.45, 0.5, 0.6, 0.41])
    ev = Evidence("Δ mIoU", d, direction=+1)
    assert ev.seeds() == (4, 5)
    assert ev.design().startswith("4 of 5 seeds; detectable ≥ 0.")
    assert ev.text().startswith("Δ mIoU = +0.") and "4 of 5 seeds" in ev.text()
    assert Evidence("Δ mIoU", d, tolerance=0.05).seeds() == (5, 5)  # all above -0.05
    claim = Claim("x", source="ours", ran="r", evidence=ev, primary=True)
    assert claim.design_text() == ev.design() and claim.title() == "**x**"
    two = Claim("y", source="ours", ran="r", evidence=[ev, Evidence("Δ acc", d, direction=-1)])
    assert two.verdict in ("contradicted", "inconclusive") and two.design_text() == ""
    assert "; Δ acc = " in two.effect_text()


def test_checks_are_shown_apart_from_the_claims_and_not_recorded(tmp_path):
    from pixelweight.book import read_verdicts
    from pixelweight.claims import Check

    ok, bad = Check("ratio = 1 gives the mean", "32 images", 3e-16, 1e-12), Check("p → ∞", "32 images", 1e-3, 1e-6)
    assert ok.passed and not bad.passed and not Check("nan", "r", float("nan"), 1.0).passed
    table = ClaimsTable("02_recall", budget="`ci`", checks=[ok, bad], claims=[
        Claim("a claim", source="abstract", ran="r", verdict="supported", primary=True)])
    text = table.markdown()
    assert "Numerical checks" in text and "✓ passes" in text and "✗ fails" in text
    assert "Primary claims (the paper's headline) in bold." in text
    table.record(tmp_path)
    (entry,) = read_verdicts(tmp_path)
    assert entry["claim"] == "a claim" and entry["role"] == "primary"
    with pytest.raises(TypeError, match="Check"):
        ClaimsTable("02_recall", budget="b", claims=table.claims, checks=["x"])
    with pytest.raises(ValueError, match="tolerance"):
        Check("t", "r", 0.0, -1.0)
