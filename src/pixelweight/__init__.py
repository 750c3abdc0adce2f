"""pixelweight: which pixels matter? Pixel-weighting losses, metrics and testbeds.

The companion library of the book *Which Pixels Matter?*: every loss, metric, data set,
model and training loop that the book's notebooks use lives here.
"""

from __future__ import annotations

try:  # the installed distribution's version is the single source of truth
    from importlib.metadata import PackageNotFoundError, version as _version

    __version__ = _version("pixelweight")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
