"""What a share lets a workspace do on the host, root inside included: read-only shares stay
unwritten, nothing made there is a host privilege (no setuid, no devices), and the files
the workspace user and the share's host owner make are each other's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.sandbox import BASH, SHARE_OWNER, as_root, host_disk
from wsfixture.model.config import Config
from wsfixture.model.share_ids import SQUASHED_ROOT
from wsfixture.workspaces import Workspace


def digest(directory: Path) -> str:
    entries = sorted(p for p in directory.rglob("*"))
    blob = "".join(
        f"{p.relative_to(directory)}:{stat.S_IMODE(p.lstat().st_mode)}:"
        f"{hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ''}\n"
        for p in entries
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def try_to_write_read_only_shares(ws: Workspace, data: Path, kind: str) -> None:
    keys = ws.state_dir / "ssh-host-keys"
    before = (digest(data), digest(keys))
    for target in ("/mnt/data", "/etc/ssh/host-keys"):
        remount = "mount -o remount,bind,rw" if kind == "container" else "mount -o remount,rw"
        first = f"{target}/$(ls {target} | head -1)"
        _, said = as_root(
            ws, f"{remount} {target}; echo evil > {target}/planted; echo more >> {first}"
        )
        assert as_root(ws, f"test -e {target}/planted")[0] != 0, f"{target}: {said}"
    after = (digest(data), digest(keys))
    for directory in (data, keys):
        (directory / "planted").unlink(missing_ok=True)
    assert after == before, "a read-only share changed on the host"


def test_read_only_shares_hold_against_root_in_a_container(
    box: Workspace, sandbox_config: Config
) -> None:
    data = sandbox_config.workspaces["box"].shares[0].source
    assert box.succeed("cat /mnt/data/precious.txt").startswith("host data")
    try_to_write_read_only_shares(box, data, "container")


@pytest.mark.vm
def test_read_only_shares_hold_against_root_in_a_vm(
    vmbox: Workspace, sandbox_config: Config
) -> None:
    data = sandbox_config.workspaces["vmbox"].shares[0].source
    assert vmbox.succeed("cat /mnt/data/precious.txt").startswith("host data")
    try_to_write_read_only_shares(vmbox, data, "vm")


PLANT = """
set -u
rm -rf "$1" && mkdir -p "$1" && cd "$1" || exit 99
cp "$4" suid && chmod 4755 suid; echo "suid $?"
cp "$4" sgid && chmod 2755 sgid; echo "sgid $?"
cp "$4" caps && setcap cap_setuid,cap_dac_read_search+ep caps; echo "caps $?"
mknod char c 1 11; echo "char $?"
mknod block b $2 $3; echo "block $?"
mkfifo fifo; echo "fifo $?"
touch owned && chown 0:0 owned; echo "chown-0 $?"
echo planted
"""


def planted(said: str) -> dict[str, int]:
    """Each attempt's exit status, from the script's own report (which must be complete:
    an attack that did not run cannot pass)."""
    assert "planted" in said.splitlines(), f"the attack did not run to its end: {said}"
    return {
        line.split()[0]: int(line.split()[1])
        for line in said.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }


def plant(
    run: Callable[[str], tuple[int, str]], where: str, shell: str = "/bin/bash"
) -> dict[str, int]:
    """Run the plant script in ``where``; its setuid candidate is a copy of ``shell`` (the
    host's own bash, put into a share, so that the host can run what is planted)."""
    major, minor = host_disk()
    argv = shlex.join(["sh", "-c", PLANT, "sh", where, str(major), str(minor), shell])
    rc, said = run(argv)
    assert rc == 0, said
    return planted(said)


def host_root_shell(command: str) -> tuple[int, str]:
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
    return done.returncode, done.stdout + done.stderr


def run_as_nobody(path: Path) -> str:
    """Run ``path`` as nobody through an fd (nobody cannot walk root's 0700 directories to
    it, and must not need to): what uid does it end up with?"""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
             f"/proc/self/fd/{fd}", "-p", "-c", "id -u"],
            capture_output=True, text=True, check=False, pass_fds=(fd,),
        )  # fmt: skip
    finally:
        os.close(fd)
    return done.stdout.strip() or f"nothing; it said {done.stderr.strip()!r} ({done.returncode})"


def privileges_on_host(directory: Path) -> list[str]:
    """Everything in ``directory`` that gives anyone more than its owner's rights, or is
    host root's."""
    found = []
    for path in directory.rglob("*"):
        st = path.lstat()
        if st.st_mode & 0o6000:
            found.append(f"{path.name}: mode {oct(st.st_mode)}")
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            found.append(f"{path.name}: a device node")
        if st.st_uid == 0 or st.st_gid == 0:
            found.append(f"{path.name}: host root's ({st.st_uid}:{st.st_gid})")
        if not path.is_symlink():
            with contextlib.suppress(OSError):
                os.getxattr(path, "security.capability")
                found.append(f"{path.name}: file capabilities")
    return found


def test_the_plant_script_plants_everything_where_nothing_stops_it(tmp_path: Path) -> None:
    """Positive control of the share attacks: run as host root, unfiltered, the same
    script makes every one of its files, and the setuid copy runs as root for nobody."""
    where = tmp_path / "control"
    try:
        said = plant(host_root_shell, str(where))
        assert set(said.values()) == {0}, said
        assert len(privileges_on_host(where)) >= 5
        assert run_as_nobody(where / "suid") == "0"
    finally:
        shutil.rmtree(where, ignore_errors=True)


def share_under_test(ws: Workspace, sandbox_config: Config, share: str) -> tuple[Path, str, int]:
    """(host dir, guest dir, host owner) of the workspace's extra rw share or its workspace/."""
    if share == "extra":
        extra = sandbox_config.workspaces[ws.name].shares[1]
        return extra.source, extra.target, SHARE_OWNER
    return ws.state_dir / "workspace", "/home/dev/workspace", 1000


def attack_share(ws: Workspace, host_dir: Path, guest_dir: str, fifo_allowed: bool) -> None:
    __tracebackhide__ = True
    where, host_shell = host_dir / "planted", host_dir / "host-bash"
    shutil.copy(BASH, host_shell)
    try:
        said = plant(lambda command: as_root(ws, command), f"{guest_dir}/planted",
                     f"{guest_dir}/host-bash")  # fmt: skip
        found = privileges_on_host(where)
        runs_as = run_as_nobody(where / "suid") if (where / "suid").exists() else "absent"
        fifo = (where / "fifo").exists()
        owners = {p.name: p.lstat().st_uid for p in where.iterdir()}
    finally:
        shutil.rmtree(where, ignore_errors=True)  # whatever got through goes first
        host_shell.unlink()
    assert found == [], f"{ws.name} planted {found} in {host_dir} ({said})"
    assert runs_as == "65534", f"{ws.name}'s planted shell ran as {runs_as!r} for nobody"
    assert {k for k, v in said.items() if v == 0} <= {"chown-0", "fifo"}, said
    assert fifo == fifo_allowed, f"a FIFO in {host_dir}: {fifo}"
    # What the workspace's root made (and "gave" to root) is the squashed id's.
    assert set(owners.values()) == {SQUASHED_ROOT}, owners


@pytest.mark.parametrize("share", ["extra", "workspace"])
def test_shares_give_no_host_privileges_from_a_container(
    box: Workspace, sandbox_config: Config, share: str
) -> None:
    host_dir, guest_dir, _ = share_under_test(box, sandbox_config, share)
    # A container's FIFO is made by the kernel inside it (no daemon to refuse it): it is
    # the squashed root's, a channel into the workspace, never a device or a privilege.
    attack_share(box, host_dir, guest_dir, fifo_allowed=True)


@pytest.mark.vm
@pytest.mark.parametrize("share", ["extra", "workspace"])
def test_shares_give_no_host_privileges_from_a_vm(
    vmbox: Workspace, sandbox_config: Config, share: str
) -> None:
    host_dir, guest_dir, _ = share_under_test(vmbox, sandbox_config, share)
    # Positive control in the guest's own tree: its root may do all of it there.
    said = plant(lambda command: as_root(vmbox, command), "/root/control")
    assert set(said.values()) == {0}, said
    attack_share(vmbox, host_dir, guest_dir, fifo_allowed=False)


def as_host_user(uid: int, directory: Path, command: str) -> str:
    """``command`` run by host uid ``uid`` in ``directory``, reached through an fd (its
    parents may be root's 0700 state dirs)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
             "sh", "-c", f"cd /proc/self/fd/{fd} && {command}"],
            capture_output=True, text=True, check=True, pass_fds=(fd,),
        ).stdout  # fmt: skip
    finally:
        os.close(fd)


def files_go_both_ways(ws: Workspace, host_dir: Path, guest_dir: str, owner: int) -> None:
    __tracebackhide__ = True
    names = ("by-guest", "by-host-user", "by-host-root")
    try:
        ws.succeed(f"echo guest > {guest_dir}/by-guest")
        assert (host_dir / "by-guest").stat().st_uid == owner, "the host user's, on the host"
        as_host_user(owner, host_dir, "echo host-edit >> by-guest && echo host > by-host-user")
        assert ws.succeed(f"cat {guest_dir}/by-guest") == "guest\nhost-edit\n"
        assert ws.succeed(f"stat -c %U {guest_dir}/by-host-user").strip() == "dev"
        ws.succeed(f"echo guest-edit >> {guest_dir}/by-host-user")
        assert (host_dir / "by-host-user").read_text() == "host\nguest-edit\n"
        if host_dir.name == "workspace":
            # What host root (wsfixture, a person with sudo) puts there is the user's to edit.
            (host_dir / "by-host-root").write_text("root\n")
            ws.succeed(f"echo guest-edit >> {guest_dir}/by-host-root")
            assert (host_dir / "by-host-root").read_text() == "root\nguest-edit\n"
            assert (host_dir / "by-host-root").stat().st_uid == 0
    finally:
        for name in names:
            (host_dir / name).unlink(missing_ok=True)


@pytest.mark.parametrize("share", ["extra", "workspace"])
def test_the_user_and_the_host_user_share_files_both_ways_in_a_container(
    box: Workspace, sandbox_config: Config, share: str
) -> None:
    files_go_both_ways(box, *share_under_test(box, sandbox_config, share))


@pytest.mark.vm
@pytest.mark.parametrize("share", ["extra", "workspace"])
def test_the_user_and_the_host_user_share_files_both_ways_in_a_vm(
    vmbox: Workspace, sandbox_config: Config, share: str
) -> None:
    files_go_both_ways(vmbox, *share_under_test(vmbox, sandbox_config, share))
