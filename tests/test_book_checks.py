"""What `make book` checks in the pages it built, and the scorecard it generates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bookbuild as bb

ROOT = Path(__file__).resolve().parents[1]


def _page(tmp_path: Path, body: str, name: str = "page.html") -> Path:
    path = tmp_path / name
    path.write_text(f"<html><head><title>t</title><script>var x = '|---|';</script></head><body>{body}</body></html>",
                    encoding="utf-8")
    return path


def _png(path: Path, blank: bool) -> None:
    data = np.zeros((8, 8, 3), dtype=np.uint8)
    if not blank:
        data[2:5, 2:5] = 200
    Image.fromarray(data).save(path)


@pytest.mark.parametrize(("body", "what"), [
    # what the published book showed: a generated table printed as one paragraph of pipes
    ("<p>Mean over seeds [95% CI]: | loss | mIoU | |—|—| | CE | 0.4 |</p>", "raw Markdown table"),
    ("<p>| a | b |\n|---|---|\n| 1 | 2 |</p>", "raw Markdown table"),
    ("<p>the weight $w_c = 1 - r_c$ of a class</p>", "raw TeX"),
    ("<p>the weight \\(w_c\\)</p>", "raw TeX"),
    ("<p>a class $c$ of the scene</p>", "raw TeX"),
    ("<li>weight \\mathrm{recall}</li>", "raw TeX"),
    ("<p>gain {glue:text}<code>gain_s0</code> at s = 0</p>", "raw MyST role"),
    ("<p>see {cite:p}<code>tian2022recall</code></p>", "raw MyST role"),
])
def test_page_problems_finds_raw_markup(tmp_path, body, what):
    problems = bb.page_problems(_page(tmp_path, body), tmp_path)
    assert len(problems) == 1 and problems[0].startswith(what), problems


@pytest.mark.parametrize("body", [
    "<table><tr><th>loss</th><th>mIoU</th></tr><tr><td>CE</td><td>0.4</td></tr></table>",
    "<pre>| a | b |\n|---|---|</pre><p>code: <code>$x$ \\mathrm{y} {glue:text}</code></p>",
    '<p>typeset: <span class="math notranslate nohighlight">\\(w_c = 1 - \\mathrm{recall}_c\\)</span></p>',
    '<div class="math notranslate nohighlight">\\[ N_c = \\#\\{i\\} \\]</div>',
    "<p>costs $5 and $10, a | b, and a dash — here</p>",
])
def test_page_problems_accepts_rendered_pages(tmp_path, body):
    assert bb.page_problems(_page(tmp_path, body), tmp_path) == []


def test_page_problems_checks_images(tmp_path):
    (tmp_path / "_images").mkdir()
    _png(tmp_path / "_images" / "ok.png", blank=False)
    _png(tmp_path / "_images" / "blank.png", blank=True)
    (tmp_path / "_images" / "empty.png").write_bytes(b"")
    body = ('<img src="_images/ok.png"><img src="_images/blank.png"><img src="_images/empty.png">'
            '<img src="_images/missing.png"><img src="data:image/png;base64,AAAA">')
    problems = bb.page_problems(_page(tmp_path, body), tmp_path)
    assert problems == ["blank image (one colour): _images/blank.png", "missing or empty image: _images/empty.png",
                        "missing or empty image: _images/missing.png"]


def test_check_pages_skips_theme_assets(tmp_path):
    (tmp_path / "_static").mkdir()
    _page(tmp_path / "_static", "<p>| a |---| b |</p>", "theme.html")
    good = _page(tmp_path, "<p>fine</p>", "good.html")
    _page(tmp_path, "<p>| a | b | |---|---|</p>", "bad.html")
    found = bb.check_pages(tmp_path)
    assert list(found) == ["bad.html"] and good.is_file()


def test_scorecard_table_lists_every_recorded_claim():
    chapters = [bb.Chapter(folder="00_testbed", title="Testbed", papers=(), idea="x"),
                bb.Chapter(folder="02_recall", title="Recall loss", papers=("tian2022recall",), idea="y")]
    line = {"chapter": "02_recall", "claim": "recall loss raises mean accuracy over CE", "verdict": "supported",
            "source": "abstract", "ran": "recall vs CE", "effect": "+0.111 [0.028, 0.194]",
            "budget": "`ci` profile (early training): 340 steps, 3 seeds", "section": "claims", "label": "(a)",
            "scale": "DigitScenes 32x32, width-16 U-Net", "role": "primary", "design": "3 of 3 seeds; detectable ≥ 0.090"}
    old_style = {"chapter": "00_testbed", "claim": "CE under-recalls | rare classes", "verdict": "inconclusive"}
    execution = {"notebooks": {"notebooks/00_testbed/02_ce_baseline": {"verdicts": [old_style]},
                               "notebooks/02_recall/02_experiments": {"verdicts": [line]},
                               "notebooks/02_recall/01_derivation": {"verdicts": []}}}
    built = list(execution["notebooks"])
    rows = bb.scorecard_table(chapters, built, execution).splitlines()
    assert rows[0] == "| Paper | Claim | Source | Budget and scale | Effect [95% CI] | Verdict |"
    assert len(rows) == 4
    assert rows[2] == ("| testbed | [CE under-recalls \\| rare classes](../notebooks/00_testbed/02_ce_baseline.ipynb) "
                       "| — | — | — | {bdg-warning}`? inconclusive` |")
    assert rows[3] == ("| {cite:t}`tian2022recall` | [**(a) recall loss raises mean accuracy over CE**]"
                       "(../notebooks/02_recall/02_experiments.ipynb#claims) | [abstract] | "
                       "`ci` profile (early training): 340 steps, 3 seeds; DigitScenes 32x32, width-16 U-Net | +0.111 [0.028, 0.194] | "
                       "{bdg-success}`✓ supported` (3 of 3 seeds; detectable ≥ 0.090) |")
    stale = {**line, "stale": "yes"}
    execution["notebooks"]["notebooks/02_recall/02_experiments"]["verdicts"] = [stale]
    assert bb.scorecard_table(chapters, built, execution).splitlines()[3].endswith(
        "(3 of 3 seeds; detectable ≥ 0.090) **⚠ STALE records** |")
    assert bb.scorecard_table(chapters, [], {"notebooks": {}}) == "No notebook of this build recorded a verdict yet."


# ----------------------------------------------------------------------------- make test on a fresh machine
_PROBE = '''
import pytest

from helpers.build_book import complete_build_info

@pytest.mark.browser
def test_opens_the_book():
    complete_build_info()  # what the browser tests' `book` fixture does

def test_unit():
    pass
'''


def _run_probe(tmp_path: Path, env_extra: dict, *args: str) -> subprocess.CompletedProcess:
    """pytest with this repository's tests/conftest.py in a repository with no built book."""
    tests = tmp_path / "tests"
    (tests / "helpers").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "conftest.py", tests / "conftest.py")
    for helper in ("environment.py", "build_book.py"):
        shutil.copy(ROOT / "tests" / "helpers" / helper, tests / "helpers" / helper)
    (tests / "helpers" / "__init__.py").write_text("", encoding="utf-8")
    (tests / "test_probe.py").write_text(textwrap.dedent(_PROBE), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\ntestpaths = tests\npythonpath = tests\naddopts = -p no:cacheprovider --import-mode=importlib\n"
        "markers =\n    browser: opens the built book\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_no_built_book_leaves_the_browser_tests_out_in_one_line(tmp_path):
    result = _run_probe(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 deselected" in result.stdout
    notes = [line for line in result.stdout.splitlines() if "browser tests left out" in line]
    assert notes == ["browser tests left out: there is no built book yet (run `make book`, then `make test` "
                     "again to check its pages)"]


def test_under_ci_a_missing_book_fails(tmp_path):
    if None in __import__("conftest").browser_executables().values():
        pytest.skip("Chromium is not installed here: under CI the conftest would install it first")
    result = _run_probe(tmp_path, {"CI": "true"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout and "left out" not in result.stdout
    assert "no built book: _build/build_info.json is missing; run `make book` first" in result.stdout


def test_browser_tests_left_out_on_purpose_say_nothing(tmp_path):
    """`-m 'not browser'` is the documented opt-out: no note, no Chromium install, exit 0."""
    result = _run_probe(tmp_path, {}, "-m", "not browser")  # no book: the rule would print its note
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 deselected" in result.stdout
    assert "browser tests" not in result.stdout and "installing" not in result.stdout


def test_chromium_that_cannot_be_installed_is_one_clear_line(monkeypatch):
    import conftest

    monkeypatch.setattr(conftest, "_can_install_packages", lambda: None)
    message = conftest.install_browser(lambda line: None)
    assert message.count("\n") == 0
    assert "chromium and chromium-driver" in message
    assert "sudo apt-get install chromium chromium-driver" in message
