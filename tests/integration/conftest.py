"""Fixtures for tests that boot real workspaces (root, systemd-nspawn, QEMU)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import make_config
from tests.support.prereqs import require_root_and_tools
from wsfixture.model.config import Config
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace


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


@pytest.fixture(scope="module")
def lab(config: Config) -> Iterator[Lab]:
    with Lab(config.network) as lab:
        yield lab


@pytest.fixture(scope="module")
def running(config: Config, lab: Lab) -> Iterator[dict[str, Workspace]]:
    """Every workspace of the module's config, booted in its lab, by name; all stopped
    after the module, also when one of them failed to boot."""
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(Workspace(spec, config, lab))
            for name, spec in config.workspaces.items()
        }
