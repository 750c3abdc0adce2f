"""The built pages, read as a reader sees them: raw Markdown or TeX, MyST roles printed as
text, missing or blank images."""

from __future__ import annotations

import re
from pathlib import Path

#: Markdown table rows printed as text: ``|---|``, or ``|—|`` once smartquotes made the dashes
#: an em dash. A generated table that Sphinx did not parse shows one of these.
RAW_TABLE_RE = re.compile(r"\|\s*(?::?-{3,}:?|—|–)\s*\|")
#: TeX that MathJax will never see: a command (``\mathrm``), a ``\(``/``\[`` delimiter, or
#: ``$...$`` that the Markdown parser did not turn into math (as MyST's dollarmath reads it: no
#: space inside the dollars, no digit after the closing one, so "$5 and $10" is prose).
RAW_TEX_RE = re.compile(r"\\(?:[()\[\]]|[A-Za-z]{2,})|\$[^$\s][^$]*[^$\s]\$(?!\d)|\$[^$\s\d]\$")
#: A MyST role printed as text (``{glue:text}`x```, ``{cite:p}``...): a glue key that did not
#: resolve, or Markdown parsed without MyST.
RAW_ROLE_RE = re.compile(r"\{(?:glue|cite|doc|ref|eq|math|numref|download|bdg)(?::[a-z-]+)?\}")
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
              "track", "wbr"}
#: Elements whose text is not prose: code, scripts, and the TeX source of typeset math.
_NOT_PROSE_TAGS = {"script", "style", "pre", "code", "textarea", "head", "svg", "math"}


def _page_parser():
    from html.parser import HTMLParser

    class PageText(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.stack: list[tuple[str, bool]] = []
            self.texts: list[str] = []
            self.images: list[str] = []

        def _skipping(self) -> bool:
            return bool(self.stack) and self.stack[-1][1]

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.images.append(attrs.get("src") or "")
            if tag in _VOID_TAGS:
                return
            classes = (attrs.get("class") or "").split()
            skip = self._skipping() or tag in _NOT_PROSE_TAGS or "math" in classes
            self.stack.append((tag, skip))

        def handle_startendtag(self, tag, attrs):
            if tag == "img":
                self.images.append(dict(attrs).get("src") or "")

        def handle_endtag(self, tag):
            if tag in _VOID_TAGS:
                return
            for depth in range(len(self.stack) - 1, -1, -1):
                if self.stack[depth][0] == tag:
                    del self.stack[depth:]
                    return

        def handle_data(self, data):
            if not self._skipping() and data.strip():
                self.texts.append(data)

    return PageText()


def _blank_image(path: Path) -> bool:
    """True when ``path`` is an image of one colour (a figure with nothing drawn)."""
    from PIL import Image

    with Image.open(path) as image:
        extrema = image.convert("RGB").getextrema()
    return all(low == high for low, high in extrema)


def page_problems(page: Path, html_root: Path) -> list[str]:
    """What a reader of ``page`` would see wrong: raw Markdown tables, raw TeX, MyST roles
    printed as text (an unresolved glue key among them), and missing, empty or blank images."""
    parser = _page_parser()
    parser.feed(page.read_text(encoding="utf-8"))
    problems: list[str] = []
    for text in parser.texts:
        snippet = " ".join(text.split())
        for what, pattern in (("raw Markdown table", RAW_TABLE_RE), ("raw TeX", RAW_TEX_RE),
                              ("raw MyST role", RAW_ROLE_RE)):
            match = pattern.search(snippet)
            if match:
                start = max(0, match.start() - 40)
                problems.append(f"{what}: ...{snippet[start:match.end() + 40]}...")
    for src in parser.images:
        if src.startswith("data:"):
            continue
        if not src or "://" in src:
            problems.append(f"image without a local file: {src!r}")
            continue
        target = (page.parent / src.split("#")[0].split("?")[0]).resolve()
        if not target.is_file() or target.stat().st_size == 0:
            problems.append(f"missing or empty image: {src}")
        elif target.suffix.lower() in (".png", ".jpg", ".jpeg") and _blank_image(target):
            problems.append(f"blank image (one colour): {src}")
    return problems


def check_pages(html_root: Path) -> dict[str, list[str]]:
    """:func:`page_problems` of every HTML page of the build (the theme's assets left out)."""
    found = {}
    for page in sorted(html_root.rglob("*.html")):
        relative = page.relative_to(html_root)
        if relative.parts[0] in ("_static", "_sources", "_images"):
            continue
        problems = page_problems(page, html_root)
        if problems:
            found[str(relative)] = problems
    return found
