"""Fixtures for tests that boot real workspaces (root, systemd-nspawn, QEMU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.configs import make_config
from tests.support.fixtures import lab, running  # noqa: F401 (fixtures, by name)
from tests.support.prereqs import require_root_and_tools
from wsfixture.model.config import Config


@pytest.fixture(scope="session", autouse=True)
def _prerequisites() -> None:
    require_root_and_tools("systemd-nspawn", "mmdebstrap", "dnsmasq", "ip", "qemu-system-x86_64")


@pytest.fixture(scope="module")
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def config(state_root: Path) -> Config:
    return make_config(
        state_root,
        alpha={"type": "container", "ip": "192.168.83.10"},
        beta={"type": "container", "ip": "192.168.83.11"},
        vmone={
            "type": "vm", "ip": "192.168.83.20", "vcpu": 2, "memory": 1024,
            "packages": ["curl"],  # a layered image
            "snapshot": "off",  # the cold boot path: test_restore has the other
        },
    )  # fmt: skip
