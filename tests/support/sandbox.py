"""The sandbox tests' workspaces (``tests/reliability/sandbox/``: host attacks,
share ownership, the bridge guard): booted once for the three, in a lab
of their own, with the shares they attack."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator

import pytest

from tests.support.configs import make_config
from tests.support.prereqs import require_root_and_tools
from wsfixture.model.config import Config
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace

SHARE_OWNER = 1234  # the owner of the extra rw shares on the host
BASH = "/bin/bash"


@pytest.fixture(scope="package")
def sandbox_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    require_root_and_tools("systemd-nspawn", "qemu-system-x86_64", "dnsmasq")
    data = tmp_path_factory.mktemp("shared-data")
    data.chmod(0o755)  # readable by the workspace user, as a shared source usually is
    (data / "precious.txt").write_text("host data the workspace may read, never write\n")
    shares = [{"source": str(data), "target": "/mnt/data", "readOnly": True}]
    for kind in ("container", "vm"):
        # A rw share of a host user other than the workspace user's uid: whose files are
        # whose is then visible.
        rw = tmp_path_factory.mktemp(f"rw-{kind}")
        os.chown(rw, SHARE_OWNER, SHARE_OWNER)
        shares.append({"source": str(rw), "target": f"/mnt/rw-{kind}"})
    return make_config(
        tmp_path_factory.mktemp("sandbox"),
        box={"type": "container", "shares": shares[:2]},
        other={"type": "container"},
        vmbox={"type": "vm", "vcpu": 1, "memory": 768, "shares": [shares[0], shares[2]]},
    )


@pytest.fixture(scope="package")
def sandbox_lab(sandbox_config: Config) -> Iterator[Lab]:
    with Lab(sandbox_config.network) as made:
        yield made


@pytest.fixture(scope="package")
def box(sandbox_config: Config, sandbox_lab: Lab) -> Iterator[Workspace]:
    with Workspace(sandbox_config.workspaces["box"], sandbox_config, sandbox_lab) as ws:
        yield ws


@pytest.fixture(scope="package")
def other(sandbox_config: Config, sandbox_lab: Lab) -> Iterator[Workspace]:
    with Workspace(sandbox_config.workspaces["other"], sandbox_config, sandbox_lab) as ws:
        yield ws


@pytest.fixture(scope="package")
def vmbox(sandbox_config: Config, sandbox_lab: Lab) -> Iterator[Workspace]:
    vmbox = sandbox_config.workspaces["vmbox"]
    with Workspace(vmbox, sandbox_config, sandbox_lab, discard_at_stop=True) as ws:
        yield ws


def as_root(ws: Workspace, command: str) -> tuple[int, str]:
    rc, out, err = ws.run(f"doas -n sh -c {shlex.quote(command)}", timeout=60)
    return rc, out + err


def host_disk() -> tuple[int, int]:
    """The host root filesystem's device (major, minor): what a planted node would open."""
    device = os.stat("/").st_dev
    return os.major(device), os.minor(device)
