"""Security defaults, looked at on a real workspace."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.support.configs import booted, make_config
from tests.support.prereqs import require_root_and_tools
from wsfixture import checks
from wsfixture.host import keys
from wsfixture.model.shares import STANDARD_SHARES
from wsfixture.remote import SshSession
from wsfixture.workspace import Workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    require_root_and_tools("systemd-nspawn", "dnsmasq")
    config = make_config(tmp_path_factory.mktemp("sec"), sec={"type": "container"})
    with booted(config, "sec") as [ws]:
        yield ws


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_keys_and_state_dirs_are_private(ws: Workspace) -> None:
    root = ws.config.state_root()
    assert mode(root / ".wsfixture" / "id_ed25519") == 0o600
    assert mode(ws.state_dir / "ssh-host-keys" / "ssh_host_ed25519_key") == 0o600
    for name in STANDARD_SHARES:
        assert mode(ws.state_dir / name) == 0o700
    assert mode(ws.lab.dir) == 0o700
    assert mode(ws.lab.known_hosts) == 0o600
    with ws.host.sudo():
        assert ws.host.file("/etc/ssh/ssh_host_ed25519_key").mode == 0o600
        assert ws.host.file("/etc/doas.conf").mode == 0o400


def test_changed_host_key_is_refused(ws: Workspace, tmp_path: Path) -> None:
    assert ws.session is not None
    impostor = keys.host_key(tmp_path, "impostor").public_key()
    session = SshSession(ws.lab, ws.name, ws.ip, ws.user, ws.session.client_key, impostor)
    with pytest.raises(paramiko.BadHostKeyException):
        session.run("true")
    ssh_config_text = ws.lab.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in ssh_config_text
    assert "StrictHostKeyChecking no" not in ssh_config_text


def test_password_login_and_foreign_doas_are_refused(ws: Workspace) -> None:
    checks.check_password_refused(ws)
    checks.check_doas_others(ws)
    # doas.conf permits the user to become root, and no one else.
    assert ws.run("doas -n -u nobody true")[0] != 0
    assert ws.run("runuser -u nobody -- true")[0] != 0, "runuser needs root"


def test_nothing_listens_in_the_root_namespace(ws: Workspace) -> None:
    from tests.support.leaks import processes_with_cmdline

    dns = processes_with_cmdline(f"--pid-file={ws.lab.dir}")
    assert dns, "dnsmasq runs"
    root_ns = Path("/proc/self/ns/net").stat().st_ino
    for pid in dns:
        assert Path(f"/proc/{pid}/ns/net").stat().st_ino != root_ns, "dnsmasq is in the lab"
    listening = Path("/proc/net/tcp").read_text() + Path("/proc/net/udp").read_text()
    gateway = "".join(f"{int(p):02X}" for p in reversed(str(ws.config.network.gateway).split(".")))
    assert gateway not in listening, "no socket on the lab gateway address in the root namespace"


def test_no_lab_address_or_route_in_the_root_namespace(ws: Workspace) -> None:
    import subprocess

    addresses = subprocess.run(
        ["ip", "-4", "addr"], capture_output=True, text=True, check=True
    ).stdout
    routes = subprocess.run(
        ["ip", "-4", "route"], capture_output=True, text=True, check=True
    ).stdout
    subnet = str(ws.config.network.subnet.network_address).rsplit(".", 1)[0] + "."
    assert subnet not in addresses
    assert subnet not in routes
