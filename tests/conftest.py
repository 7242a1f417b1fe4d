"""Shared helpers for the test suite.

Under CI=true, anything `make test` installs or sets up that is missing fails the test
instead of skipping it. Only what this machine kind cannot have (working KVM, vsock) skips.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, what: str) -> None:
    """Skip locally, fail in CI, when a prerequisite that `make test` provides is missing."""
    __tracebackhide__ = True
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, but `make test` should have provided it (CI=true)")
    pytest.skip(f"{what} is missing (run `make test`, which installs it)")


def require_root_and_tools(*tools: str) -> None:
    __tracebackhide__ = True
    require(os.geteuid() == 0, "root")
    for tool in tools:
        found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        require(found is not None, tool)


# Fixtures that boot (or drive a pytest that boots) real workspaces as root.
BOOTING_FIXTURES = {"real", "workspace", "workspace_factory", "ws_lab", "lab", "running"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that boots is marked `integration` by rule, so the fast lane (`make
    test-fast`, a bare `pytest`: -m "not integration") cannot pick one up by accident."""
    for item in items:
        if BOOTING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def footprint() -> set[str]:
    """Everything wsfixture can leave on this machine: lab directories, namespaces, their
    /etc/netns entries, cgroups and ledger records."""
    from wsfixture.host import settings

    places = {
        "lab dir": settings.current().labs_dir,
        "netns": Path("/run/netns"),
        "/etc/netns": Path("/etc/netns"),
        "cgroup": settings.current().cgroup_root,
        "ledger record": settings.current().ledger_dir,
    }
    found = set()
    for kind, place in places.items():
        if place.is_dir():
            entries = (p for p in place.iterdir() if kind != "cgroup" or p.is_dir())
            found |= {f"{kind} {p.name}" for p in entries}
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[footprint_key] = footprint()


@pytest.hookimpl(trylast=True)  # after the plugin has released this session's workspaces
def pytest_sessionfinish(session: pytest.Session) -> None:
    """The whole suite leaves nothing behind, whichever test would have leaked it."""
    if hasattr(session.config, "workerinput"):
        return  # under xdist the controller looks, once everything has ended
    left = footprint() - session.stash.get(footprint_key, set())
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"the suite left behind: {', '.join(sorted(left))}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


footprint_key = pytest.StashKey[set[str]]()
