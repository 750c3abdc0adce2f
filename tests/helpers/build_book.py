"""The book's build script, ``tools/build_book.py``, loaded once as a module for the tests.

It is a script, not part of the installed package, so the tests import it by path; every
test module shares the one module object.
"""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_NAME = "build_book"


def load_build_book():
    """``tools/build_book.py`` as a module (loaded on the first call, then reused)."""
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, ROOT / "tools" / "build_book.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
