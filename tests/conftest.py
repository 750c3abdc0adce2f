"""When the browser tests run, and the Chromium they need.

``make test`` runs every test. The browser tests (marker ``browser``,
``tests/test_book_browser.py``) open the book that ``make book`` built, in Debian's headless
Chromium. This file decides, once per session, before any test runs:

- **No built book yet** (``_build/build_info.json`` is missing): outside CI the browser
  tests are left out and the session ends with one line saying so (``make book`` first);
  the unit tests run as usual. Under CI (``CI=true``) they stay in and fail, since CI must
  test the book it built.
- **Chromium missing**: where this user can install Debian packages (root, or ``sudo``
  without a password) ``chromium`` and ``chromium-driver`` are installed with apt-get;
  where it cannot, the browser tests are left out and the session fails with one line
  saying what to install.

``make test PYTEST_ARGS="-m 'not browser'"`` leaves the browser tests out on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.environment import in_ci

ROOT = Path(__file__).resolve().parents[1]
BUILD_INFO = ROOT / "_build" / "build_info.json"
APT_LOG = ROOT / "_build" / "apt-chromium.log"
BROWSER_PACKAGES = ("chromium", "chromium-driver")
INSTALL_HINT = ("sudo apt-get install chromium chromium-driver, or leave the browser tests out: "
                "make test PYTEST_ARGS=\"-m 'not browser'\"")

_NOTES: list[str] = []
_FAIL_SESSION: list[str] = []


def browser_executables() -> dict[str, str | None]:
    """Where ``chromium`` and ``chromedriver`` are (``None`` for a missing one)."""
    found = {}
    for name in ("chromium", "chromedriver"):
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        found[name] = path
    return found


def _can_install_packages() -> list[str] | None:
    """The command prefix that runs apt-get as root here ([] as root, ["sudo", "-n"]), or None."""
    if not shutil.which("apt-get"):
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.call(["sudo", "-n", "true"], stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL) == 0:
        return ["sudo", "-n"]
    return None


def install_browser(say) -> str | None:
    """Install Debian's Chromium and ChromeDriver where possible; ``None`` on success, else
    the one line that says what to do."""
    prefix = _can_install_packages()
    if prefix is None:
        return (f"the browser tests need Debian's {' and '.join(BROWSER_PACKAGES)}, which are not installed "
                f"and cannot be installed by this user: {INSTALL_HINT}")
    say(f"installing {' and '.join(BROWSER_PACKAGES)} (Debian packages) for the browser tests; "
        f"log: {APT_LOG.relative_to(ROOT)}")
    APT_LOG.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with APT_LOG.open("w", encoding="utf-8") as log:
        ok = all(
            subprocess.call([*prefix, *command], stdout=log, stderr=subprocess.STDOUT, env=env) == 0
            for command in (["apt-get", "update", "-qq"],
                            ["apt-get", "install", "-y", "-qq", *BROWSER_PACKAGES])
        )
    if not ok or None in browser_executables().values():
        return (f"installing {' and '.join(BROWSER_PACKAGES)} with apt-get failed (see "
                f"{APT_LOG.relative_to(ROOT)}): {INSTALL_HINT}")
    return None


@pytest.hookimpl(trylast=True)  # after pytest's own -m / -k selection: only the tests that will run
def pytest_collection_modifyitems(session, config, items):
    browser = [item for item in items if item.get_closest_marker("browser")]
    if not browser:
        return
    reason = None
    if not BUILD_INFO.is_file() and not in_ci():
        reason = ("browser tests left out: there is no built book yet "
                  "(run `make book`, then `make test` again to check its pages)")
        _NOTES.append(reason)
    elif None in browser_executables().values():
        reporter = config.pluginmanager.get_plugin("terminalreporter")

        def say(line):
            if reporter is not None:
                reporter.write_line(line)

        problem = install_browser(say)
        if problem is not None:
            reason = f"browser tests not run: {problem}"
            _FAIL_SESSION.append(reason)
    if reason is not None:
        config.hook.pytest_deselected(items=browser)
        items[:] = [item for item in items if item not in browser]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for line in [*_NOTES, *_FAIL_SESSION]:
        terminalreporter.write_line(line, yellow=line in _NOTES, red=line in _FAIL_SESSION, bold=True)


def pytest_sessionfinish(session, exitstatus):
    if _FAIL_SESSION and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
