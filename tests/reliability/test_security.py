"""Security defaults, looked at on a real workspace."""

from __future__ import annotations

import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.support.configs import booted, make_config
from tests.support.prereqs import require_root_and_tools
from wsfixture import checks
from wsfixture.copying import CopyError
from wsfixture.host import keys, logcap
from wsfixture.model.shares import STANDARD_SHARES
from wsfixture.remote import SshSession
from wsfixture.workspaces import Workspace


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
    assert ws._ssh is not None
    impostor = keys.host_key(tmp_path, "impostor").public_key()
    session = SshSession(ws.lab, ws.name, ws.ip, ws.user, ws._ssh.client_key, impostor)
    with pytest.raises(paramiko.BadHostKeyException):
        session.run("true")
    ssh_config_text = ws.lab.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in ssh_config_text
    assert "StrictHostKeyChecking no" not in ssh_config_text


def test_password_login_and_foreign_doas_are_refused(ws: Workspace) -> None:
    checks.check_password_refused(ws)
    checks.check_doas_others(ws)
    # doas.conf lets the workspace user alone become root, or anyone (root could anyway:
    # testinfra's host.sudo("nobody")); no other user gets anything from it.
    assert ws.succeed("doas -n -u nobody id -un") == "nobody\n"
    assert ws.run("runuser -u nobody -- true")[0] != 0, "runuser needs root"
    assert ws.run("doas -n -u nobody doas -n true")[0] != 0, "nobody may not use doas"


def test_nothing_listens_in_the_root_namespace(ws: Workspace) -> None:
    from tests.support.leaks import processes_with_cmdline

    dns = processes_with_cmdline(f"--pid-file={ws.lab.dir}")
    assert dns, "dnsmasq runs"
    root_ns = Path("/proc/self/ns/net").stat().st_ino
    nobody = pwd.getpwnam("nobody").pw_uid
    for pid in dns:
        assert Path(f"/proc/{pid}/ns/net").stat().st_ino != root_ns, "dnsmasq is in the lab"
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Uid:")).split()[1:]  # fmt: skip
        assert set(uids) == {str(nobody)}, "every workspace reaches it: it is not root"
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


def test_a_copy_out_replaces_a_link_the_guest_planted_and_never_writes_through(
    ws: Workspace, tmp_path: Path
) -> None:
    """The guest plants ``~/workspace/dest -> <a root-only host file>`` in its share; a
    copy to that host path replaces the link. Control: paramiko's plain ``sftp.get`` (what
    ``get`` did before) writes through the very same link."""
    victim, control = tmp_path / "victim", tmp_path / "control"
    for path in (victim, control):
        path.write_text("host secret\n")
        path.chmod(0o600)
    share = ws.state_dir / "workspace"
    ws.succeed(f"ln -s {victim} ~/workspace/dest && ln -s {control} ~/workspace/control")
    try:
        ws.get("/etc/hostname", share / "dest")
        assert victim.read_text() == "host secret\n"
        assert not (share / "dest").is_symlink()
        assert (share / "dest").read_text() == f"{ws.name}\n"
        assert sorted(p.name for p in share.iterdir()) == ["control", "dest"]  # no temporaries
        assert ws._ssh is not None
        with ws._ssh.client().open_sftp() as sftp:
            sftp.get("/etc/hostname", str(share / "control"))
        assert control.read_text() == f"{ws.name}\n", "the attack is real without the guard"
    finally:
        ws.succeed("rm -f ~/workspace/dest ~/workspace/control")


def test_a_copy_out_is_bounded_and_refuses_what_is_not_a_file(
    ws: Workspace, tmp_path: Path
) -> None:
    ws.succeed("ln -sf /dev/zero ~/zero && head -c 1048576 /dev/urandom > ~/mib")
    try:
        with pytest.raises(CopyError, match="not a regular file"):
            ws.get("/home/dev/zero", tmp_path / "zero")
        with pytest.raises(CopyError, match="over the bound of 1000"):
            ws.get("/home/dev/mib", tmp_path / "mib", max_bytes=1000)
        assert list(tmp_path.iterdir()) == []  # nothing half-written
        ws.get("/home/dev/mib", tmp_path / "mib")  # control: within its own size
        assert (tmp_path / "mib").stat().st_size == 1048576
    finally:
        ws.succeed("rm -f ~/zero ~/mib")


def test_a_directory_copies_out_with_its_links_as_links(ws: Workspace, tmp_path: Path) -> None:
    ws.succeed(
        "mkdir -p ~/tree/sub && echo a > ~/tree/a && echo b > ~/tree/sub/b && chmod 750 "
        "~/tree/a && ln -s /etc/shadow ~/tree/sub/shadow && mkfifo ~/tree/fifo"
    )
    try:
        with pytest.raises(CopyError, match="is a directory"):
            ws.get("/home/dev/tree", tmp_path / "flat")
        done = ws.get("/home/dev/tree", tmp_path / "tree", recursive=True)
        out = tmp_path / "tree"
        assert (out / "a").read_text() == "a\n"
        assert mode(out / "a") == 0o750  # the guest's mode
        assert (out / "sub" / "b").read_text() == "b\n"
        assert (out / "sub" / "shadow").is_symlink()
        assert str((out / "sub" / "shadow").readlink()) == "/etc/shadow"
        assert not (out / "fifo").exists()
        assert done.skipped == ["/home/dev/tree/fifo"]
        assert (done.files, done.bytes) == (3, 4)
    finally:
        ws.succeed("rm -rf ~/tree")


def console_flood(ws: Workspace, device: str, mib: int, limit: int) -> None:
    """Root in ``ws`` writes ``mib`` MiB to its console ``device`` while the handle holds
    the log to ``limit``: the log and its kept half stay near the limit (the flood's own
    rate past it, between two looks), and the flood is really in the log (it was cut, and
    its tail is the flood's). The handle's limit is put back."""
    assert ws._log_cap is not None
    before, ws._log_cap.limit = ws._log_cap.limit, limit
    cut = ws._log_cap.cut_bytes
    try:
        ws.succeed(f"doas -n sh -c 'yes wsfixture-flood | head -c {mib}M > {device}'", timeout=120)
        held = ws.console_log.stat().st_size + logcap.previous(ws.console_log).stat().st_size
        passed = ws._log_cap.cut_bytes - cut + ws.console_log.stat().st_size
        assert passed >= mib * 2**20 * 0.9, "the flood reached the log"
        assert held < limit * 2 + 48 * 2**20, held
        assert b"wsfixture-flood" in logcap.read_tail(ws.console_log, 4096)
    finally:
        ws._log_cap.limit = before


def test_a_container_flooding_its_console_fills_no_disk(ws: Workspace) -> None:
    """1200 MiB went into the log against disk = 1G before it was held."""
    console_flood(ws, "/dev/console", 96, 2 * 2**20)
