"""Facts about where the tests run, shared by tests/conftest.py and the browser tests."""

from __future__ import annotations

import os


def in_ci() -> bool:
    """True under CI (``CI`` set to true/1/yes, as CI services and ``.ci/run`` do)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
