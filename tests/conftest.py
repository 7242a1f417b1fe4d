"""The suite's rules: what is an integration test, and that the whole suite leaves nothing
behind. What tests share is in ``tests.support``."""

from __future__ import annotations

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
# the kill matrix and the fault tests compare machine-wide state, the limits and churn
# tests measure time and CPU, the sandbox tests watch the root namespace as a whole.
ALONE_DIR = Path(__file__).parent / "reliability"


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The one place a test is marked `integration`: by its directory, or by a booting
    fixture anywhere else, so the fast lane (`make test-fast`, a bare `pytest`:
    -m "not integration") cannot pick one up by accident. The same for `alone`."""
    for item in items:
        in_booting_dir = any(item.path.is_relative_to(d) for d in BOOTING_DIRS)
        if in_booting_dir or BOOTING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        if item.path.is_relative_to(ALONE_DIR):
            item.add_marker(pytest.mark.alone)


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
