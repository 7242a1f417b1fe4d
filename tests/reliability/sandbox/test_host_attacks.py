"""Attacks from inside, as root there (through doas), against the host.

Each attack reads what it aims at on the host before and after. An attack that changed
anything is undone here first (the host must not stay changed), and then the test fails.
Containers get every attack; VMs those that apply: a guest may change its own kernel, and
the test asserts only that the host is unchanged.
"""

from __future__ import annotations

import re
import shlex
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.configs import booted
from tests.support.sandbox import as_root, host_disk
from wsfixture.host import settings
from wsfixture.host.setup import QEMU_USER
from wsfixture.model.config import Config, workspace_spec
from wsfixture.workspaces import Workspace


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


def test_other_labs_are_unreachable(box: Workspace, sandbox_config: Config) -> None:
    spec = workspace_spec(sandbox_config, name="far", type="container", ip="192.168.83.73")
    with booted(sandbox_config, spec) as [far]:
        assert far.succeed("hostname").strip() == "far"
        assert box.run("ping -c 1 -W 1 192.168.83.73")[0] != 0, "another lab's address"
        assert box.run("getent hosts far")[0] != 0, "another lab's name"


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
