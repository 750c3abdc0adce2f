"""A local Sphinx extension of the book (``_config.yml``: ``sphinx.local_extensions``).

sphinx-thebe 0.3 registers its inline configuration script (``const THEBE_JS_URL = ...``)
after the HTML builder has started, and with Sphinx 7 the script then reaches every page
twice: the second copy throws "Identifier 'THEBE_JS_URL' has already been declared", a page
error that tests/test_book_browser.py catches. This extension keeps only the first copy of
any script that a page would load twice (same file or same inline body, same attributes).
It also adds the book's stylesheet, ``static/book.css`` (compact generated tables).
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"


def _script_key(script) -> tuple:
    attributes = getattr(script, "attributes", None) or {}
    return (str(getattr(script, "filename", script) or ""), tuple(sorted(attributes.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """``html-page-context``: drop the repeated entries of the page's ``script_files``."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    kept = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def add_static(app, config) -> None:
    """``config-inited``: serve ``static/`` (the book's stylesheet ``book.css``)."""
    if str(STATIC) not in [str(p) for p in config.html_static_path]:
        config.html_static_path.append(str(STATIC))


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("config-inited", add_static)
    app.add_css_file("book.css")
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
