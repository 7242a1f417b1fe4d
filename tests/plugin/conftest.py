"""The plugin's tests' pytester: one that may boot, with the config in its directory."""

from __future__ import annotations

import pytest

from tests.support.prereqs import require_root_and_tools
from tests.support.pytester import CONFIG


@pytest.fixture
def real(pytester: pytest.Pytester) -> pytest.Pytester:
    require_root_and_tools("systemd-nspawn", "mmdebstrap", "dnsmasq")
    pytester.makefile(".toml", workspaces=CONFIG)
    return pytester
