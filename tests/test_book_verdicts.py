"""pixelweight.book.record_verdicts / read_verdicts: the verdicts a chapter leaves for the
landing page of the book."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixelweight.book import VERDICTS_FILE, read_verdicts, record_verdicts
from pixelweight.results import load_records
from pixelweight.stats import VERDICTS, Interval, verdict


def test_record_and_read_round_trip(tmp_path):
    path = record_verdicts(tmp_path / "run", "02_recall", {
        "higher mean accuracy than CE": "supported",
        "similar mIoU": "inconclusive",
    })
    assert path == tmp_path / "run" / VERDICTS_FILE and path.is_file()
    entries = read_verdicts(tmp_path / "run")
    assert [(e["chapter"], e["claim"], e["verdict"]) for e in entries] == [
        ("02_recall", "higher mean accuracy than CE", "supported"),
        ("02_recall", "similar mIoU", "inconclusive"),
    ]
    import pixelweight

    assert {e["pixelweight"] for e in entries} == {pixelweight.__version__}
    assert all(isinstance(e["git_commit"], str) and e["git_commit"] for e in entries)
    # one JSON object per line
    assert [json.loads(line)["claim"] for line in path.read_text().splitlines()] == [
        "higher mean accuracy than CE", "similar mIoU"]


def test_a_claim_recorded_again_keeps_its_place(tmp_path):
    record_verdicts(tmp_path, "04_lmp", {"a": "supported", "b": "contradicted"})
    record_verdicts(tmp_path, "04_lmp", {"c": "not testable at this scale", "a": "inconclusive"})
    assert [(e["claim"], e["verdict"]) for e in read_verdicts(tmp_path)] == [
        ("a", "inconclusive"), ("b", "contradicted"), ("c", "not testable at this scale")]


def test_verdicts_from_pixelweight_stats_are_accepted(tmp_path):
    computed = verdict(Interval(mean=0.1, low=0.05, high=0.15, n=3, confidence=0.95), direction=+1)
    record_verdicts(str(tmp_path), "00_testbed", {"CE under-recalls rare classes": computed})
    assert read_verdicts(tmp_path)[0]["verdict"] == computed and computed in VERDICTS


def test_nothing_recorded_reads_empty(tmp_path):
    assert read_verdicts(tmp_path) == []
    assert read_verdicts(tmp_path / "missing") == []


def test_the_file_is_not_taken_for_a_run_record(tmp_path):
    record_verdicts(tmp_path, "02_recall", {"a": "supported"})
    assert load_records(tmp_path) == []  # load_records reads *.json; verdicts.jsonl is not one


@pytest.mark.parametrize(("args", "error", "match"), [
    ((1, "02_recall", {"a": "supported"}), TypeError, "results_dir must be a str or Path, got int"),
    (("{d}", "02 recall", {"a": "supported"}), ValueError, "chapter must be the chapter's folder name under "
                                                             "notebooks/, got '02 recall'"),
    (("{d}", "", {"a": "supported"}), ValueError, "got ''"),
    (("{d}", None, {"a": "supported"}), ValueError, "got None"),
    (("{d}", "02_recall", [("a", "supported")]), TypeError, "verdicts must be a mapping of claim -> verdict, got list"),
    (("{d}", "02_recall", {}), ValueError, "verdicts is empty"),
    (("{d}", "02_recall", {"a": "yes"}), ValueError, "verdict 'yes' is not one of supported, contradicted"),
    (("{d}", "02_recall", {"a": 1}), ValueError, "verdict must be a string, got 1"),
    (("{d}", "02_recall", {"": "supported"}), ValueError, "a claim is one non-empty line, got ''"),
    (("{d}", "02_recall", {"two\nlines": "supported"}), ValueError, "a claim is one non-empty line"),
    (("{d}", "02_recall", {3: "supported"}), ValueError, "claim must be a string, got 3"),
])
def test_record_verdicts_errors(tmp_path, args, error, match):
    args = tuple(str(tmp_path) if a == "{d}" else a for a in args)
    with pytest.raises(error, match=match):
        record_verdicts(*args)
    assert not (tmp_path / VERDICTS_FILE).exists()


def test_one_results_dir_holds_one_chapter(tmp_path):
    record_verdicts(tmp_path, "02_recall", {"a": "supported"})
    with pytest.raises(ValueError, match=r"holds verdicts of chapter '02_recall', not '04_lmp'"):
        record_verdicts(tmp_path, "04_lmp", {"b": "supported"})


@pytest.mark.parametrize(("line", "match"), [
    ("not json", r"verdicts\.jsonl:2: not valid JSON"),
    ("[1, 2]", r":2: expected a JSON object, got list"),
    ('{"chapter": "a", "claim": "c"}', r":2: lacks the fields \['verdict'\]"),
    ('{"chapter": "a/b", "claim": "c", "verdict": "supported"}', "chapter must be a folder name"),
    ('{"chapter": "a", "claim": "c", "verdict": "maybe"}', "verdict 'maybe' is not one of"),
])
def test_read_verdicts_names_the_bad_line(tmp_path, line, match):
    good = '{"chapter": "a", "claim": "c", "verdict": "supported"}'
    Path(tmp_path, VERDICTS_FILE).write_text(f"{good}\n{line}\n\n")
    with pytest.raises(ValueError, match=match):
        read_verdicts(tmp_path)
