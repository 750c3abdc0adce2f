"""The built book in a real browser: headless Chromium opens every page of ``_build/html``.

This test reads the HTML that ``make book`` built; it never executes a notebook. Run
``make book`` first: without a complete build (``_build/build_info.json``, written by a
successful build that was not ``--only``) every test here FAILS with that instruction, it
does not skip. CI (``.ci/run``) runs the unit tests, then ``make book``, then these tests.
To leave them out on purpose: ``make test PYTEST_ARGS="-m 'not browser'"``.

The pages are served from a local ``http.server`` on 127.0.0.1 (the network is closed).
Jupyter Book loads MathJax 3 from a CDN; the server's copy of every page points that URL at
the MathJax 3 that the ``django-static-mathjax`` package ships (the published book still
loads it from the CDN). Each page must then load with no console error, no request leaving
127.0.0.1, no failed request, every image decoded, every formula typeset by MathJax without
error, every internal link (and its ``#fragment``) resolving to a file of the build, the
footer naming the library version and commit of the build, and, on notebook pages, a Colab
button opening the committed ``.ipynb`` of the page at the release of ``_config.yml``. The
landing page's chapter table, the "How to cite" BibTeX and the search page are checked too.
A screenshot of every page of the table of contents is saved to ``_build/screenshots/``.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` (``.ci/run``
installs them); ``selenium`` drives them.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import re
import shutil
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

import bookbuild
from helpers.build_book import complete_build_info

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
HTML = BUILD / "html"
SCREENSHOTS = BUILD / "screenshots"
MATHJAX_CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/mathjax@3/")
MATHJAX_LOCAL = "/__mathjax__/"

pytestmark = pytest.mark.browser


BUILD_BOOK = bookbuild
TOC_ENTRIES = BUILD_BOOK.read_toc(ROOT / "_toc.yml")
PAGES = [*TOC_ENTRIES, "search", "genindex"]


def _config() -> dict:
    with (ROOT / "_config.yml").open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def book() -> dict:
    """``_build/build_info.json`` of a complete, current build (else the test fails)."""
    return complete_build_info()


def _mathjax_root() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.origin is None:
        pytest.fail("MathJax is not installed: pip install -e '.[test]' (it brings django-static-mathjax)")
    folder = Path(spec.origin).parent / "static" / "mathjax"
    version = json.loads((folder / "package.json").read_text(encoding="utf-8"))["version"]
    assert version.startswith("3."), f"the local MathJax is {version}; the book loads MathJax 3"
    assert (folder / "es5" / "tex-mml-chtml.js").is_file()
    return folder


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves ``_build/html``, with the MathJax CDN routed to the local copy."""

    mathjax: Path

    def translate_path(self, path: str) -> str:
        clean = unquote(urlsplit(path).path)
        if clean.startswith(MATHJAX_LOCAL):
            return str(self.mathjax / clean[len(MATHJAX_LOCAL):])
        return super().translate_path(path)

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.suffix == ".html" and path.is_file():
            body = MATHJAX_CDN.sub(MATHJAX_LOCAL, path.read_text(encoding="utf-8")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        return super().send_head()

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def server(book):
    handler = functools.partial(_Handler, directory=str(HTML))
    _Handler.mathjax = _mathjax_root()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def _executable(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install chromium chromium-driver (bash .ci/run does)")
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _executable("chromium")
    # Chromium's own traffic (component updates, safe browsing, DNS prefetch, network-time
    # queries...) would try to resolve Google's hosts on a closed network: switch what can be
    # switched off, and make every host name but the book's 127.0.0.1 fail at once instead of
    # after a DNS timeout. A page's own request to another host is still seen (_open).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-domain-reliability", "--disable-client-side-phishing-detection",
                 "--dns-prefetch-disable", "--no-pings",
                 "--disable-features=OptimizationHints,MediaRouter,Translate,NetworkTimeServiceQuerying,"
                 "AutofillServerCommunication,InterestFeedContentSuggestions",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                 "--disable-dev-shm-usage", "--window-size=1280,1400", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(_executable("chromedriver")))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


# ----------------------------------------------------------------------------- helpers
class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8"))
    return frozenset(parser.ids)


def _open(driver, url: str) -> dict:
    """Load ``url``, wait for MathJax, and return the page's console errors and requests."""
    driver.get_log("browser"), driver.get_log("performance")  # forget the previous page
    driver.get(url)
    mathjax = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const wait = () => {"
        "  if (document.readyState !== 'complete') return setTimeout(wait, 50);"
        "  if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) return done(null);"
        "  MathJax.startup.promise.then(() => done(MathJax.version), e => done('error: ' + e));"
        "};"
        "wait();"
    )
    time.sleep(0.2)  # late console messages
    console = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    return {"mathjax": mathjax, "console": console, **_page_traffic(driver.get_log("performance"), url)}


def _page_traffic(entries: list[dict], url: str) -> dict:
    """The requests of the page at ``url`` and their failures, from Chromium's performance log.

    A request is the page's when the document that made it is on the book's server (its
    ``documentURL``). What the log holds besides — requests of Chromium itself, or a failure
    whose request was not made by this page — is returned as ``background``: it does not fail
    a test, since it is not the book's doing. (Such background traffic to Google's hosts, which
    cannot be resolved on a closed network, made this test fail one run in four.)
    """
    origin = "{0.scheme}://{0.netloc}/".format(urlsplit(url))
    requests, failures, background, urls = [], [], [], {}
    for entry in entries:
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        method = message["method"]
        if method == "Network.requestWillBeSent":
            target = params["request"]["url"]
            if params.get("documentURL", "").startswith(origin) or target.startswith(origin):
                requests.append(target)
                urls[params["requestId"]] = target
            else:
                background.append(f"request {target} (document {params.get('documentURL')!r})")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            if params.get("requestId") in urls:
                failures.append(f"{params['response']['status']} {params['response']['url']}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            if params.get("requestId") in urls:
                failures.append(f"{params.get('errorText')} {urls[params['requestId']]}")
            else:
                background.append(f"{params.get('errorText')} (request {params.get('requestId')}, not the page's)")
    return {"requests": requests, "failures": failures, "background": background}


def _local_file(url: str) -> Path:
    path = unquote(urlsplit(url).path)
    target = HTML / path.lstrip("/")
    return target / "index.html" if path.endswith("/") or target.is_dir() else target


SCREENSHOT_PART_HEIGHT = 4000  # px: a part a file viewer shows whole
SCREENSHOT_OVERLAP = 100  # px shown twice, at the foot of a part and under the header of the next


def _screenshot_stem(entry: str) -> str:
    return entry.replace("/", "__")


def _save_full_page(driver, entry: str) -> list[Path]:
    """Screenshots of the whole page, as a reader scrolls through it, in parts of at most
    :data:`SCREENSHOT_PART_HEIGHT` pixels: ``<page>.part1of3.png``, ...

    The window is made one part tall and the page scrolled part by part (a single capture
    beyond the viewport leaves long pages blank past Chromium's texture size). Successive parts
    overlap by :data:`SCREENSHOT_OVERLAP` pixels, so that nothing hides under the sticky header.
    Earlier screenshots of the page are removed first.
    """
    import io

    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stem = _screenshot_stem(entry)
    for old in SCREENSHOTS.glob(f"{stem}.*png"):
        old.unlink()
    size = driver.get_window_size()
    try:
        driver.set_window_size(size["width"], SCREENSHOT_PART_HEIGHT)
        view, total = driver.execute_script(
            "const d = document.documentElement, b = document.body;"
            "return [window.innerHeight, Math.max(d.scrollHeight, b.scrollHeight)];")
        step = view - SCREENSHOT_OVERLAP
        tops = list(range(0, max(1, total - view + 1), step))
        if tops[-1] + view < total:
            tops.append(total - view)
        images = []
        for top in tops:
            driver.execute_script("window.scrollTo(0, arguments[0]);", top)
            time.sleep(0.3)  # images that load on scrolling, the theme's scroll handlers
            images.append(Image.open(io.BytesIO(driver.get_screenshot_as_png())))
    finally:
        driver.execute_script("window.scrollTo(0, 0);")
        driver.set_window_size(size["width"], size["height"])
    if len(images) > 1 and tops[-1] - tops[-2] < step:  # the last part repeats what the one before showed
        keep = (tops[-2] + step) - tops[-1]
        scale = images[-1].height / view
        images[-1] = images[-1].crop((0, int(keep * scale), images[-1].width, images[-1].height))
    saved = []
    for k, image in enumerate(images, 1):
        path = SCREENSHOTS / f"{stem}.part{k}of{len(images)}.png"
        image.save(path)
        saved.append(path)
    return saved


#: Text nodes a reader sees as prose: code, math (typeset or not) and scripts left out.
_PROSE_TEXT_JS = (
    "const skip = 'pre, code, script, style, textarea, svg, mjx-container, .math';"
    "const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);"
    "const out = []; let node;"
    "while ((node = walker.nextNode())) {"
    "  const el = node.parentElement;"
    "  if (el && !el.closest(skip) && node.textContent.trim()) out.push(node.textContent);"
    "}"
    "return out;"
)


def _raw_markup(texts: list[str]) -> list[str]:
    """Raw Markdown tables, raw TeX and MyST roles in the page's prose, as the build checks
    them in the HTML (tools/build_book.py), here in the text the browser rendered."""
    problems = []
    for text in texts:
        snippet = " ".join(text.split())
        for what, pattern in (("raw Markdown table", BUILD_BOOK.RAW_TABLE_RE), ("raw TeX", BUILD_BOOK.RAW_TEX_RE),
                              ("raw MyST role", BUILD_BOOK.RAW_ROLE_RE)):
            match = pattern.search(snippet)
            if match:
                problems.append(f"{what} on the page: ...{snippet[max(0, match.start() - 40):match.end() + 40]}...")
    return problems


# ----------------------------------------------------------------------------- every page
@pytest.mark.parametrize("page", PAGES)
def test_page_in_the_browser(page, book, server, browser):
    path = book["pages"].get(page, f"{page}.html")
    assert (HTML / path).is_file(), f"{path} is missing from {HTML}"
    url = f"{server}/{path}"
    seen = _open(browser, url)
    problems: list[str] = []

    # no page errors, nothing leaves 127.0.0.1, no failed request
    problems += [f"console {e['level']}: {e['message']}" for e in seen["console"]]
    problems += [f"request outside the book: {u}" for u in seen["requests"]   # (chrome:// is the browser's own)
                 if urlsplit(u).scheme in ("http", "https", "ws", "wss", "ftp") and not u.startswith(server)]
    problems += [f"failed request: {f}" for f in seen["failures"]]

    # every image is loaded and decoded
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
    problems += [f"image not loaded: {src}" for src, complete, width in images if not (complete and width > 0)]

    # math: MathJax 3 ran and typeset every formula, without a TeX error
    math = browser.execute_script(
        "const m = Array.from(document.querySelectorAll('.math'));"
        "return [m.length, m.filter(e => !e.querySelector('mjx-container')).length,"
        "        document.querySelectorAll('mjx-merror').length];")
    if math[0]:
        if not (isinstance(seen["mathjax"], str) and seen["mathjax"].startswith("3.")):
            problems.append(f"MathJax did not run: {seen['mathjax']!r}")
        if math[1]:
            problems.append(f"{math[1]} of {math[0]} formulas were not typeset")
        if math[2]:
            problems.append(f"{math[2]} formulas have a TeX error")
    scripts = browser.execute_script(
        "return Array.from(document.scripts).map(s => s.getAttribute('src') || '').filter(s => /mathjax/i.test(s));")
    problems += [f"MathJax from an unexpected place: {s}" for s in scripts if not s.startswith(MATHJAX_LOCAL)]

    # internal links resolve, fragments included
    links = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);")
    internal = sorted({u for u in links if u.startswith(server)})
    for link in internal:
        target = _local_file(link)
        if not target.is_file():
            problems.append(f"broken link: {link} (no {target.relative_to(HTML)})")
            continue
        fragment = unquote(urlsplit(link).fragment)
        if fragment and target.suffix == ".html" and fragment not in _ids(target):
            problems.append(f"broken link: {link} (no #{fragment} in {target.relative_to(HTML)})")

    # the footer names what the book was built from
    edition = browser.execute_script(
        "const p = document.querySelector('.pixelweight-edition');"
        "return p ? [p.dataset.pixelweight, p.dataset.gitCommit, p.textContent] : null;")
    if edition is None:
        problems.append("no footer with the library version and commit (.pixelweight-edition)")
    elif edition[:2] != [book["pixelweight"], book["git_commit"]]:
        problems.append(f"footer says {edition[:2]}, the build was {[book['pixelweight'], book['git_commit']]}")

    # notebook pages: the Colab button opens the committed .ipynb at the release
    colab = browser.execute_script(
        "return Array.from(document.querySelectorAll('a[href*=\"colab.research.google.com\"]')).map(a => a.href);")
    if page in book["notebooks"]:
        org_repo = urlsplit(book["repository"]).path.strip("/")
        expected = (f"{book['colab_url'].rstrip('/')}/github/{org_repo}/blob/{book['release']}/"
                    f"{page}.ipynb")
        if colab != [expected]:
            problems.append(f"Colab buttons {colab}, expected [{expected}]")
        if not (ROOT / f"{page}.ipynb").is_file():
            problems.append(f"the Colab button's target {page}.ipynb is not in the repository")
        if not browser.execute_script("return document.querySelectorAll('.admonition').length > 0"):
            problems.append("no chapter header (needs, run time, rerun)")
    elif colab:
        problems.append(f"a Colab button on a page that is not a notebook: {colab}")

    # what a reader reads: no raw Markdown table, raw TeX or unresolved role in the prose
    problems += _raw_markup(browser.execute_script(_PROSE_TEXT_JS))
    # no figure left empty: every figure of a notebook output holds a loaded image
    empty = browser.execute_script(
        "return Array.from(document.querySelectorAll('.cell_output img, figure img'))"
        ".filter(i => !(i.complete && i.naturalWidth > 1 && i.naturalHeight > 1)).length;")
    if empty:
        problems.append(f"{empty} empty figure(s)")

    # a notebook that recorded verdicts shows them in a claims table, as labelled badges (a
    # claim may be in two tables, early training and converged: the recorded verdict, the
    # later one, must be in one of them)
    recorded = book["verdicts"].get(page) or []
    if recorded:
        claims = browser.execute_script(
            "const ts = Array.from(document.querySelectorAll('table')).filter(t =>"
            "  /Source/.test(t.tHead?.textContent || '') && /Verdict/.test(t.tHead?.textContent || ''));"
            "return ts.length ? ts.flatMap(t => Array.from(t.tBodies[0].rows).map(r => r.cells[0].textContent"
            "  + ' => ' + (r.cells[4].querySelector('.sd-badge')?.textContent || ''))) : null;")
        if claims is None:
            problems.append("no claims table (columns Source ... Verdict) on a page that recorded verdicts")
        else:
            for line in recorded:
                if not any(_plain_quotes(line["claim"]) in _plain_quotes(row) and row.endswith(line["verdict"])
                           for row in claims):
                    problems.append(f"the claims table lacks the recorded claim {line['claim']!r} ({line['verdict']})")

    if page in TOC_ENTRIES:
        _save_full_page(browser, page)
    if seen["background"]:
        failed = sum("(request" in b for b in seen["background"])
        documents = sorted({b.split("(document ")[-1].rstrip(")") for b in seen["background"] if "(document " in b})
        print(f"{path}: Chromium's own traffic, not the page's (not an error): {len(seen['background']) - failed} "
              f"request(s) of {', '.join(documents) or 'no document'}, {failed} failed request(s) not made by the page")
    assert not problems, f"{path}:\n  " + "\n  ".join(problems)


# ----------------------------------------------------------------------------- special pages
def test_landing_page_table(book, server, browser):
    from pixelweight.stats import VERDICTS

    _open(browser, f"{server}/{book['pages'][TOC_ENTRIES[0]]}")
    rows = browser.execute_script(
        "const t = Array.from(document.querySelectorAll('table')).find(t => /Verdicts/.test(t.tHead?.textContent || ''));"
        "return t ? Array.from(t.tBodies[0].rows).map(r => [r.cells[0].textContent.trim(),"
        " r.cells[0].querySelector('a')?.getAttribute('href') || null, r.cells[3].textContent.trim()]) : null;")
    assert rows is not None, "the landing page has no chapter table"
    with (ROOT / "book" / "chapters.yml").open(encoding="utf-8") as handle:
        chapters = yaml.safe_load(handle)["chapters"]
    assert len(rows) == len(chapters)
    for (title, href, verdict), chapter in zip(rows, chapters, strict=True):
        assert title == chapter["title"]
        built = [nb for nb in book["notebooks"] if nb.split("/")[1] == chapter["folder"]]
        if not built:
            assert (href, verdict) == (None, "planned")
            continue
        assert href is not None and href.split("#")[0].endswith(f"{built[0]}.html"), (title, href)
        found = [v for nb in built for v in book["verdicts"][nb]]
        if not found:
            assert verdict == "no verdict recorded yet"
        else:
            primary = [v for v in found if v.get("role") == "primary"]  # counted first when there are any
            counted = primary or found
            counts = [f"{sum(v['verdict'] == name for v in counted)} {name}" for name in VERDICTS
                      if any(v["verdict"] == name for v in counted)]
            expected = ("primary: " if primary else "") + ", ".join(counts)
            assert verdict.startswith(expected), (title, verdict)
    text = browser.execute_script("return document.body.innerText;")
    assert f"pixelweight {book['pixelweight']} at commit {book['git_commit'][:10]}" in text
    assert "make book" in text and "make test" in text and "Colab" in text


def test_how_to_cite_has_bibtex(book, server, browser):
    _open(browser, f"{server}/{book['pages']['book/how_to_cite']}")
    blocks = browser.execute_script(
        "return Array.from(document.querySelectorAll('div.highlight-bibtex pre')).map(p => p.textContent);")
    assert blocks and blocks[0].startswith("@software{whichpixelsmatter"), blocks[:1]
    assert f"version = {{{book['pixelweight']}}}" in re.sub(r"\s+", " ", blocks[0])
    with (ROOT / "book" / "chapters.yml").open(encoding="utf-8") as handle:
        keys = [k for c in yaml.safe_load(handle)["chapters"] for k in c["papers"]]
    text = "\n".join(blocks[1:])
    for key in keys:
        assert re.search(rf"@\w+\{{{key},", text), f"no BibTeX for {key}"


@pytest.mark.parametrize(("query", "expected"), [
    ("testbed", "notebooks/00_testbed/01_testbed.html"),   # a word of a notebook's prose
    ("cite", "book/how_to_cite.html"),                      # a word of a prose page
])
def test_search_page_finds(query, expected, book, server, browser):
    _open(browser, f"{server}/search.html?q={query}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = browser.execute_script(
            "const s = document.querySelector('.search-summary'); return s ? s.textContent : '';")
        if done:
            break
        time.sleep(0.1)
    hits = browser.execute_script(
        "return Array.from(document.querySelectorAll('#search-results ul.search li a')).map(a => a.getAttribute('href'));")
    assert any(h.split("?")[0].split("#")[0].endswith(expected) for h in hits), (query, done, hits)


def _plain_quotes(text: str) -> str:
    """``text`` with MyST's typographic quotes (smartquotes: ’ for ') made plain again."""
    return text.translate(str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'}))


def test_scorecard_lists_every_recorded_claim(book, server, browser):
    """The scorecard page: one row per recorded verdict of the build, each with a verdict label
    that reads without colour and a link to the section of the chapter that tests it."""
    from pixelweight.claims import VERDICT_LABELS

    _open(browser, f"{server}/{book['pages']['book/scorecard']}")
    rows = browser.execute_script(
        "const t = Array.from(document.querySelectorAll('table'))"
        "  .find(t => /Verdict/.test(t.tHead?.textContent || '') && /Budget/.test(t.tHead?.textContent || ''));"
        "return t ? Array.from(t.tBodies[0].rows).map(r => [r.cells[1].textContent.trim(),"
        "  r.cells[1].querySelector('a')?.getAttribute('href') || null, r.cells[5].textContent.trim(),"
        "  !!r.cells[5].querySelector('.sd-badge')]) : null;")
    with (ROOT / "book" / "chapters.yml").open(encoding="utf-8") as handle:
        folders = [c["folder"] for c in yaml.safe_load(handle)["chapters"]]
    recorded = [(nb, v) for folder in folders for nb in book["notebooks"] if nb.split("/")[1] == folder
                for v in book["verdicts"][nb]]  # the scorecard's order: chapters.yml, then the toc
    if not recorded:
        assert "recorded a verdict yet" in browser.execute_script("return document.body.innerText;")
        return
    assert rows is not None, "the scorecard page has no table of claims"
    assert len(rows) == len(recorded)
    for (claim, href, label, badge), (notebook, line) in zip(rows, recorded, strict=True):
        assert _plain_quotes(line["claim"]) in _plain_quotes(claim)
        assert href is not None and href.split("#")[0].endswith(f"{notebook}.html"), (claim, href)
        if line.get("section"):
            assert href.endswith(f"#{line['section']}"), (claim, href)
        assert badge and label.startswith(f"{VERDICT_LABELS[line['verdict']][1]} {line['verdict']}"), (claim, label)
        if line.get("design"):  # seeds in the claimed direction, smallest detectable effect
            assert line["design"] in label, (claim, label)
