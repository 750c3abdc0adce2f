#!/usr/bin/env python3
"""Build the book *Which Pixels Matter?*: the command line of the package ``tools/bookbuild/``.

Run it with the virtual environment's interpreter (``make book`` does)::

    .venv/bin/python tools/build_book.py [--profile {ci,full}] [--device auto] [--only GLOB]
                                         [--no-html | --html-only] [--timeout SECONDS] [--jobs N]
    .venv/bin/python tools/build_book.py --sync [--only GLOB]     # make sync
    .venv/bin/python tools/build_book.py --save-times             # after a full run on a GPU

What each step does, and where it lives, is in ``tools/bookbuild/__init__.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bookbuild, beside this file

from bookbuild.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
