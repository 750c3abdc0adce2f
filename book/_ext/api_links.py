"""A local Sphinx extension of the book (``_config.yml``: ``sphinx.local_extensions``).

sphinx-codeautolink links the library names of the notebooks' *code cells* to the API
reference (book/api/). This extension does the same for the *prose*: an inline code literal
of a chapter that names a documented object of ``pixelweight`` becomes a link to its API entry:

- a dotted name, ``pixelweight.losses.lmp_weights`` (or with a call, ``...(x)``), when that
  object is documented;
- a bare name, ``RecallLoss`` or ``recall_loss(logits, target)``, when exactly one documented
  object of a public module of ``pixelweight`` has that name, and it is a class or an
  exception, or a function written with a call or with an underscore in its name (so that
  a word such as ``train`` or ``table`` in the prose stays a word).

Literals inside links, headings' permalinks or the API pages themselves are left alone.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

_LITERAL = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)(?P<call>\(.*\))?$", re.S)
_LINKABLE = ("class", "exception", "function", "data")


def _index(domain) -> tuple[dict, dict]:
    """``(full name -> entry, short name -> [full names])`` of pixelweight's module-level objects."""
    full, short = {}, {}
    for name, entry in domain.objects.items():
        if not name.startswith("pixelweight.") or entry.objtype not in _LINKABLE:
            continue
        parts = name.split(".")
        if len(parts) != 3 or any(p.startswith("_") for p in parts):
            continue  # module-level objects of a public module only: pixelweight.<module>.<name>
        full[name] = entry
        short.setdefault(parts[2], []).append(name)
    return full, short


def _target(text: str, full: dict, short: dict) -> str | None:
    match = _LITERAL.match(text.strip())
    if not match:
        return None
    name, call = match.group("name"), match.group("call")
    if name.startswith("pixelweight."):
        return name if name in full else None
    if "." in name:
        return None  # an attribute of something else: F.cross_entropy, splits.train
    candidates = short.get(name, [])
    if len(candidates) != 1:
        return None
    entry = full[candidates[0]]
    if entry.objtype in ("class", "exception"):
        return candidates[0]
    if entry.objtype == "function" and (call is not None or "_" in name):
        return candidates[0]
    return None


def _inside(node, kinds) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, kinds):
            return True
        parent = parent.parent
    return False


def link_literals(app, doctree, docname) -> None:
    """``doctree-resolved``: wrap the matching inline literals of a page in API links."""
    if docname.startswith("book/api/"):
        return
    domain = app.env.get_domain("py")
    full, short = _index(domain)
    if not full:
        return
    for literal in list(doctree.findall(nodes.literal)):
        if literal.get("classes") and "xref" in literal["classes"]:
            continue  # already a cross-reference
        if _inside(literal, (nodes.reference, nodes.title, nodes.literal_block)):
            continue
        target = _target(literal.astext(), full, short)
        if target is None:
            continue
        entry = full[target]
        try:
            uri = app.builder.get_relative_uri(docname, entry.docname) + "#" + entry.node_id
        except Exception:  # a builder without URIs (e.g. linkcheck): leave the text as it is
            return
        reference = nodes.reference("", "", internal=True, refuri=uri, reftitle=target,
                                    classes=["api-link"])
        literal.replace_self(reference)
        reference.append(literal)


def _add_static(app, config) -> None:
    """``config-inited``: serve ``static/api_links.css`` (dotted underline under the code
    cells' library names)."""
    config.html_static_path.append(str(Path(__file__).parent / "static"))


def setup(app):
    app.connect("config-inited", _add_static)
    app.add_css_file("api_links.css")
    app.connect("doctree-resolved", link_literals)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
