"""Prerequisites: under CI=true, anything `make test` installs or sets up that is missing
fails the test instead of skipping it. Only what this machine kind cannot have (working
KVM, vsock) skips, and says so."""

from __future__ import annotations

import os
import shutil

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
