"""Attacks from inside, as root there (through doas), against the host.

Each attack reads what it aims at on the host before and after. An attack that changed
anything is undone here first (the host must not stay changed), and then the test fails.
Containers get every attack; VMs those that apply: a guest may change its own kernel, and
the test asserts only that the host is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.configs import booted, make_config
from tests.support.prereqs import require_root_and_tools
from wsfixture import checks
from wsfixture.host import settings
from wsfixture.host.setup import QEMU_USER
from wsfixture.model import derive
from wsfixture.model.config import Config, workspace_spec
from wsfixture.model.share_ids import SQUASHED_ROOT
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace

SHARE_OWNER = 1234  # the owner of the extra rw shares on the host
BASH = "/bin/bash"


@dataclass(frozen=True)
class HostValue:
    """Something on the host an attack aims at: how to read it, and to put it back."""

    read: Callable[[], str]
    restore: Callable[[str], None]
    same: Callable[[str, str], bool] = lambda before, after: before == after


def proc_sys(key: str) -> HostValue:
    path = Path("/proc/sys") / key.replace(".", "/")
    return HostValue(lambda: path.read_text(), lambda value: path.write_text(value))


def sys_file(path: str) -> HostValue:
    file = Path(path)

    def restore(value: str) -> None:
        chosen = value.split("[")[1].split("]")[0] if "[" in value else value.strip()
        file.write_text(chosen)

    return HostValue(lambda: file.read_text(), restore)


def listing(*paths: str) -> HostValue:
    def read() -> str:
        return "\n".join(
            f"{p}: {sorted(e.name for e in Path(p).iterdir() if e.is_dir())}" for p in paths
        )

    def restore(_: str) -> None:
        raise AssertionError("an attack added a host cgroup; remove it by hand: " + read())

    return HostValue(read, restore)


def modules() -> HostValue:
    def read() -> str:
        # /sys/module lists built-in and loaded modules alike (this machine kind's kernel
        # has no loadable modules at all, and so no /proc/modules).
        return "\n".join(sorted(p.name for p in Path("/sys/module").iterdir()))

    def restore(before: str) -> None:
        for name in set(read().split()) - set(before.split()):
            subprocess.run(["rmmod", name], check=False)

    return HostValue(read, restore)


def clock() -> HostValue:
    def read() -> str:
        # Wall clock minus monotonic clock: constant unless someone sets the clock.
        return str(time.time() - time.monotonic())

    def restore(before: str) -> None:
        subprocess.run(["date", "-s", f"@{time.monotonic() + float(before)}"], check=True)

    return HostValue(read, restore, lambda a, b: abs(float(a) - float(b)) < 5)


PROC = "mkdir -p /tmp/p && mount -t proc proc /tmp/p"


@dataclass(frozen=True)
class Attack:
    """A command root runs inside to change the host, what on the host it aims at, what a
    container says when it is refused, and (the positive control) a guest command that
    exits 0 once the same command has worked in a VM, whose kernel is its own."""

    id: str
    command: str
    target: Callable[[], HostValue]
    refused: str  # a regex the container's output must match
    took_effect: str


DENIED = "Permission denied"
ATTACKS = [
    Attack("swappiness", f"{PROC} && echo 61 > /tmp/p/sys/vm/swappiness",
           lambda: proc_sys("vm.swappiness"), DENIED, "grep -qx 61 /proc/sys/vm/swappiness"),
    Attack("core-pattern", f"{PROC} && echo '|/bin/false' > /tmp/p/sys/kernel/core_pattern",
           lambda: proc_sys("kernel.core_pattern"), DENIED,
           "grep -qx '|/bin/false' /proc/sys/kernel/core_pattern"),
    Attack("hostname", f"{PROC} && echo evil > /tmp/p/sys/kernel/hostname",
           lambda: proc_sys("kernel.hostname"), DENIED,
           "test $(cat /proc/sys/kernel/hostname) = evil"),
    Attack("remount-proc-sys", "mount -o remount,rw /proc/sys; echo 62 > /proc/sys/vm/swappiness",
           lambda: proc_sys("vm.swappiness"), DENIED, "grep -qx 62 /proc/sys/vm/swappiness"),
    Attack("sys-write", "echo never > /sys/kernel/mm/transparent_hugepage/enabled",
           lambda: sys_file("/sys/kernel/mm/transparent_hugepage/enabled"),
           "Read-only file system",
           r"grep -q '\[never\]' /sys/kernel/mm/transparent_hugepage/enabled"),
    Attack("module-load", "modprobe dummy || insmod /tmp/dummy.ko", modules,
           "Operation not permitted", "grep -q '^dummy ' /proc/modules"),
    Attack("set-clock", "date -s '2001-01-01 00:00:00'", clock, "Operation not permitted",
           "test $(date +%Y) = 2001"),
    Attack("cgroup-mount",
           "mkdir -p /tmp/cg /tmp/cgm; mount -t cgroup2 none /tmp/cg && mkdir /tmp/cg/wsf-escape;"
           " mount -t cgroup -o memory none /tmp/cgm && mkdir /tmp/cgm/wsf-escape",
           lambda: listing("/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory"), DENIED,
           "test -d /tmp/cg/wsf-escape"),
]  # fmt: skip


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
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


@pytest.fixture(scope="module")
def lab(config: Config) -> Iterator[Lab]:
    with Lab(config.network) as lab:
        yield lab


@pytest.fixture(scope="module")
def box(config: Config, lab: Lab) -> Iterator[Workspace]:
    with Workspace(config.workspaces["box"], config, lab) as ws:
        yield ws


@pytest.fixture(scope="module")
def other(config: Config, lab: Lab) -> Iterator[Workspace]:
    with Workspace(config.workspaces["other"], config, lab) as ws:
        yield ws


@pytest.fixture(scope="module")
def vmbox(config: Config, lab: Lab) -> Iterator[Workspace]:
    with Workspace(config.workspaces["vmbox"], config, lab) as ws:
        yield ws


def as_root(ws: Workspace, command: str) -> tuple[int, str]:
    rc, out, err = ws.run(f"doas -n sh -c {shlex.quote(command)}", timeout=60)
    return rc, out + err


def attack(ws: Workspace, command: str, target: HostValue) -> tuple[int, str]:
    """Run ``command`` as root in ``ws``; fail if the host changed (after putting it back).
    Returns the command's exit status and output, for the caller to check that it ran."""
    __tracebackhide__ = True
    before = target.read()
    rc, said = as_root(ws, command)
    after = target.read()
    if not target.same(before, after):
        target.restore(before)
        assert target.read() == before, "the host could not be restored"
        pytest.fail(f"{command!r} changed the host: {before!r} -> {after!r}\n{said}")
    return rc, said


def give_module(ws: Workspace) -> None:
    """The host kernel's own dummy module inside ``ws`` (/tmp/dummy.ko), so that the
    module-load attack can only fail for the sandbox; a skip where the host kernel has no
    loadable modules at all (this machine kind's), which nothing can load anyway."""
    if not Path("/proc/modules").exists():
        pytest.skip("this machine kind's kernel has no loadable modules (no /proc/modules)")
    found = subprocess.run(["modinfo", "-n", "dummy"], capture_output=True, text=True)
    if found.returncode != 0 or not found.stdout.strip().endswith(".ko"):
        pytest.skip(f"the host kernel has no plain dummy.ko to offer: {found.stdout.strip()}")
    ws.put(found.stdout.strip(), "/tmp/dummy.ko")


@pytest.mark.parametrize("attempt", ATTACKS, ids=[a.id for a in ATTACKS])
def test_root_in_a_container_cannot_change_the_host(
    box: Workspace, vmbox: Workspace, attempt: Attack
) -> None:
    if attempt.id == "module-load":
        give_module(box)
    rc, said = attack(box, attempt.command, attempt.target())
    assert rc != 0, f"the attack said it worked: {said}"
    assert re.search(attempt.refused, said), f"refused for another reason than the sandbox: {said}"
    # Positive control: the same command, as root in a VM (its kernel is its own), works.
    as_root(vmbox, attempt.command)
    assert as_root(vmbox, attempt.took_effect)[0] == 0, "the attack never worked anywhere"


@pytest.mark.vm
@pytest.mark.parametrize("attempt", ATTACKS, ids=[a.id for a in ATTACKS])
def test_root_in_a_vm_cannot_change_the_host(vmbox: Workspace, attempt: Attack) -> None:
    attack(vmbox, attempt.command, attempt.target())
    # Positive control: it worked, on the guest's own kernel.
    rc, said = as_root(vmbox, attempt.took_effect)
    assert rc == 0, f"{attempt.command!r} did not take effect in the VM: {said}"


def test_container_root_is_not_host_root(box: Workspace) -> None:
    rc, uid_map = as_root(box, "cat /proc/self/uid_map")
    assert rc == 0
    inside, outside, count = (int(n) for n in uid_map.split())
    assert (inside, outside, count) == (0, 1 << 30, 65536)
    # The container's processes are that uid on the host, every one of them.
    assert box._backend is not None
    cgroup = box._backend.cgroup
    pids = [
        int(p) for f in (cgroup / "payload").rglob("cgroup.procs") for p in f.read_text().split()
    ]
    assert pids
    owners = {Path(f"/proc/{pid}").stat().st_uid for pid in pids}
    assert all(owner >= 1 << 30 for owner in owners), owners


def host_disk() -> tuple[int, int]:
    device = os.stat("/").st_dev
    return os.major(device), os.minor(device)


def test_devices_are_out_of_reach(box: Workspace) -> None:
    major, minor = host_disk()
    for name, kind, numbers in (
        ("disk", "b", f"{major} {minor}"),
        ("kvm", "c", "10 232"),
        ("mem", "c", "1 1"),
    ):
        rc, said = as_root(box, f"mknod /tmp/{name} {kind} {numbers} && head -c 16 /tmp/{name}")
        assert rc != 0, f"{name} opened: {said!r}"
    assert as_root(box, "dmesg > /dev/null")[0] != 0, "the kernel log is the host's"


def test_host_processes_are_invisible(box: Workspace) -> None:
    _, said = as_root(box, "grep -l 'py[t]est' /proc/[0-9]*/cmdline 2>/dev/null; ps -e | wc -l")
    assert "cmdline" not in said, f"a host process is visible: {said}"
    assert int(said.split()[-1]) < 40, "only the container's own processes"
    assert as_root(box, "readlink /proc/1/exe")[1].strip().endswith("systemd"), "its own init"


def test_keys_outside_the_workspace_are_unreadable(box: Workspace, other: Workspace) -> None:
    client_key = box.config.state_root() / ".wsfixture" / "id_ed25519"
    other_host_key = other.state_dir / "ssh-host-keys" / "ssh_host_ed25519_key"
    for path in (client_key, other_host_key, box.lab.dir / "ssh_config"):
        assert path.exists()
        rc, said = as_root(box, f"cat {shlex.quote(str(path))}")
        assert rc != 0, path
        assert "PRIVATE KEY" not in said, path


def test_other_labs_are_unreachable(box: Workspace, config: Config) -> None:
    spec = workspace_spec(config, name="far", type="container", ip="192.168.83.73")
    with booted(config, spec) as [far]:
        assert far.succeed("hostname").strip() == "far"
        assert box.run("ping -c 1 -W 1 192.168.83.73")[0] != 0, "another lab's address"
        assert box.run("getent hosts far")[0] != 0, "another lab's name"


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


def test_read_only_shares_hold_against_root_in_a_container(box: Workspace, config: Config) -> None:
    data = config.workspaces["box"].shares[0].source
    assert box.succeed("cat /mnt/data/precious.txt").startswith("host data")
    try_to_write_read_only_shares(box, data, "container")


@pytest.mark.vm
def test_read_only_shares_hold_against_root_in_a_vm(vmbox: Workspace, config: Config) -> None:
    data = config.workspaces["vmbox"].shares[0].source
    assert vmbox.succeed("cat /mnt/data/precious.txt").startswith("host data")
    try_to_write_read_only_shares(vmbox, data, "vm")


@pytest.mark.vm
def test_qemu_is_confined(vmbox: Workspace) -> None:
    assert vmbox._backend is not None
    assert vmbox._backend.process is not None
    qemu = vmbox._backend.process.pid
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{qemu}/status").read_text().splitlines()
    )
    import pwd

    user = pwd.getpwnam(QEMU_USER)
    assert status["Uid"].split() == [str(user.pw_uid)] * 4
    assert status["Gid"].split() == [str(user.pw_gid)] * 4
    assert status["Seccomp"].strip() == "2", "a seccomp filter (-sandbox) is in force"
    assert int(status["CapEff"], 16) == 0


def test_state_is_private(box: Workspace) -> None:
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(box.config.state_root()) == 0o700
    assert mode(box.state_dir) == 0o700
    assert mode(box.state_dir / "ssh-host-keys" / "ssh_host_ed25519_key") == 0o600
    assert mode(box.config.state_root() / ".wsfixture" / "id_ed25519") == 0o600
    records = list(settings.current().ledger_dir.glob("*.json"))
    assert records
    assert {mode(record) for record in records} == {0o600}


# -- shares (#24) -----------------------------------------------------------------------

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


def share_under_test(ws: Workspace, config: Config, share: str) -> tuple[Path, str, int]:
    """(host dir, guest dir, host owner) of the workspace's extra rw share or its workspace/."""
    if share == "extra":
        extra = config.workspaces[ws.name].shares[1]
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
    box: Workspace, config: Config, share: str
) -> None:
    host_dir, guest_dir, _ = share_under_test(box, config, share)
    # A container's FIFO is made by the kernel inside it (no daemon to refuse it): it is
    # the squashed root's, a channel into the workspace, never a device or a privilege.
    attack_share(box, host_dir, guest_dir, fifo_allowed=True)


@pytest.mark.vm
@pytest.mark.parametrize("share", ["extra", "workspace"])
def test_shares_give_no_host_privileges_from_a_vm(
    vmbox: Workspace, config: Config, share: str
) -> None:
    host_dir, guest_dir, _ = share_under_test(vmbox, config, share)
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
    box: Workspace, config: Config, share: str
) -> None:
    files_go_both_ways(box, *share_under_test(box, config, share))


@pytest.mark.vm
@pytest.mark.parametrize("share", ["extra", "workspace"])
def test_the_user_and_the_host_user_share_files_both_ways_in_a_vm(
    vmbox: Workspace, config: Config, share: str
) -> None:
    files_go_both_ways(vmbox, *share_under_test(vmbox, config, share))


# -- the lab bridge (#24) ----------------------------------------------------------------

GRATUITOUS_ARP = """
import socket, struct, sys, time
ip = socket.inet_aton(sys.argv[1])
mac = bytes.fromhex(open("/sys/class/net/host0/address").read().strip().replace(":", ""))
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac, ip, b"\\xff" * 6, ip)
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
    s.bind(("host0", 0))
    for _ in range(4):  # beyond the neighbour entry's locktime (1 s)
        s.send(b"\\xff" * 6 + mac + b"\\x08\\x06" + arp)
        time.sleep(0.4)
print("sent")
"""


def neighbour_of(lab: Lab, ip: str) -> str:
    said = lab.run(["ip", "neigh", "show", ip]).split()
    return said[said.index("lladdr") + 1] if "lladdr" in said else ""


def take_over(attacker: Workspace, ip: str) -> None:
    command = (
        f"ip addr add {ip}/24 dev host0 2>/dev/null; "
        f"python3 -c {shlex.quote(GRATUITOUS_ARP)} {ip}; "
        f"ping -c 1 -W 1 -I {ip} 192.168.83.1 >/dev/null; "
        f"ip addr del {ip}/24 dev host0"
    )
    _, said = as_root(attacker, command)
    assert "sent" in said.splitlines(), f"the attack did not run: {said}"


def test_a_workspace_cannot_take_over_a_neighbours_address(
    box: Workspace, other: Workspace, lab: Lab
) -> None:
    victim = str(other.ip)
    assert other.succeed("hostname").strip() == "other"  # the lab knows its MAC now
    assert neighbour_of(lab, victim) == derive.mac("other")
    take_over(box, victim)
    assert neighbour_of(lab, victim) == derive.mac("other"), "the bridge believed the attacker"
    assert [o.check.name for o in checks.verify(other) if not o.ok] == []
    # Positive control: with the attacker's port unfiltered, the same frames move the
    # neighbour's address to the attacker; the lab is put right afterwards.
    port = derive.veth_host_name("box")
    lab.unguard_port(port)
    try:
        take_over(box, victim)
        moved = neighbour_of(lab, victim)
    finally:
        assert box._backend is not None
        box._backend.guard_port(port)
        lab.forget_neighbour(victim)
    assert moved == derive.mac("box"), "the control attack did not move the address"
    assert other.succeed("hostname").strip() == "other"
