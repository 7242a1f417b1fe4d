"""The suite's rules: what is an integration test, and that the whole suite leaves nothing
behind. What tests share is in ``tests.support``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.leaks import footprint

# Fixtures that boot (or drive a pytest that boots) real workspaces as root.
BOOTING_FIXTURES = {
    "real",
    "remote_sshd",
    "workspace",
    "workspace_factory",
    "ws_lab",
    "lab",
    "running",
}
# Every test under these directories boots something real.
BOOTING_DIRS = tuple(Path(__file__).parent / d for d in ("integration", "reliability"))
# Every test under this one runs `alone` (make test's second lane, after the parallel one):
# the kill matrix and the fault tests compare machine-wide state, the limits tests measure
# time and CPU, the sandbox tests watch the root namespace as a whole. A module there that
# looks at nothing but its own may say so (``RUNS_BESIDE_OTHERS = True``, with why).
ALONE_DIR = Path(__file__).parent / "reliability"


# The suite's own durations (pytest-split's format, of a serial `make test`): the fast lane's
# CI shards split by them, and make test's parallel lane takes the longest modules first.
DURATIONS = Path(__file__).parents[1] / ".test_durations"
UNKNOWN_SECONDS = {True: 10.0, False: 0.1}  # a test the file does not know: booting or not


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The one place a test is marked `integration`: by its directory, or by a booting
    fixture anywhere else, so the fast lane (`make test-fast`, a bare `pytest`:
    -m "not integration") cannot pick one up by accident. The same for `alone`."""
    for item in items:
        in_booting_dir = any(item.path.is_relative_to(d) for d in BOOTING_DIRS)
        if in_booting_dir or BOOTING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        beside = getattr(getattr(item, "module", None), "RUNS_BESIDE_OTHERS", False)
        if item.path.is_relative_to(ALONE_DIR) and not beside:
            item.add_marker(pytest.mark.alone)
    if hasattr(config, "workerinput"):
        items[:] = longest_modules_first(items)


def longest_modules_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """The items, a module's together and the longest modules first: xdist's `loadfile`
    (with `--no-loadscope-reorder`) hands modules out in this order, so no worker starts a
    long module while the other is finishing (each worker collects the same order)."""
    known = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    seconds: dict[Path, float] = {}
    for item in items:
        guess = UNKNOWN_SECONDS[item.get_closest_marker("integration") is not None]
        seconds[item.path] = seconds.get(item.path, 0.0) + known.get(item.nodeid, guess)
    return sorted(items, key=lambda item: -seconds[item.path])  # stable: order within kept


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[footprint_key] = footprint()


@pytest.hookimpl(trylast=True)  # after the plugin has released this session's workspaces
def pytest_sessionfinish(session: pytest.Session) -> None:
    """The whole suite leaves nothing behind, whichever test would have leaked it."""
    if hasattr(session.config, "workerinput"):
        return  # under xdist the controller looks, once everything has ended
    if session.config.option.collectonly:
        return  # it ran nothing; what another run beside it has up is that run's
    left = footprint() - session.stash.get(footprint_key, set())
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"the suite left behind: {', '.join(sorted(left))}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


footprint_key = pytest.StashKey[set[str]]()
