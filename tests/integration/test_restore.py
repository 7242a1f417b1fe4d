"""VM workspaces restored from a template: two clones of one template, in one lab, at once,
must be two different machines, each the workspace it was told to be."""

from __future__ import annotations

import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from tests.support.clock import assert_clock_is_the_hosts
from tests.support.configs import make_config
from tests.support.held_writes import POWER_DOWN, WRITTEN, stopped
from tests.support.leaks import leftovers
from wsfixture import checks
from wsfixture.backends import qemu
from wsfixture.backends.qemu import template as template_maker
from wsfixture.image import store, templates
from wsfixture.model import derive
from wsfixture.model.config import Config
from wsfixture.net.lab import Lab
from wsfixture.retry import retry_until
from wsfixture.workspaces import Workspace

pytestmark = pytest.mark.vm

SHAPE = {"type": "vm", "vcpu": 1, "memory": 768}


@pytest.fixture(scope="module")
def config(state_root: Path) -> Config:
    shared = state_root / "shared"
    (shared / "ro").mkdir(parents=True)
    (shared / "ro" / "given.txt").write_text("from the host\n")
    (shared / "rw").mkdir()
    (shared / "rw").chmod(0o777)  # the workspace user writes there
    shares = [
        {"source": str(shared / "ro"), "target": "/srv/ro", "readOnly": True},
        {"source": str(shared / "rw"), "target": "/srv/rw"},
    ]
    return make_config(
        state_root,
        **{"twin-a": {**SHAPE, "shares": shares}, "twin-b": {**SHAPE, "shares": shares}},
        rebuilt={**SHAPE, "packages": ["less"]},
        afterwards={**SHAPE, "packages": ["less"]},
        corrupt={**SHAPE, "memory": 736},  # its template damaged: a shape no other test uses
        **{"corrupt-next": {**SHAPE, "memory": 736}},
        prompt=SHAPE,
        discarded=SHAPE,
        unsynced=SHAPE,
        orderly=SHAPE,
        fallback={**SHAPE, "memory": 640},
    )


@pytest.fixture(scope="module")
def twins(config: Config, lab: Lab) -> Iterator[tuple[Workspace, Workspace]]:
    a = Workspace(config.workspaces["twin-a"], config, lab, discard_at_stop=True)
    b = Workspace(config.workspaces["twin-b"], config, lab, discard_at_stop=True)
    try:
        a._launch()  # the first makes the template if this shape has none yet
        b._launch()
        a._wait_ready()
        b._wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


def boot_of(ws: Workspace) -> str:
    return str(ws.describe()["boot"])


def template_of(ws: Workspace) -> templates.Template:
    """The template of the workspace's VM shape (whether or not it exists)."""
    assert isinstance(ws._backend, qemu.QemuBackend)
    return templates.Template(store.templates_dir() / ws._backend.shape.key)


def test_both_stand_on_one_template(twins: tuple[Workspace, Workspace]) -> None:
    """The second is its clone; the first is another, or, where the shape had no template
    yet, the VM that made it and went on."""
    a, b = twins
    key = template_of(a).key
    assert boot_of(b) == f"restored from template {key}"
    assert boot_of(a) in (boot_of(b), f"made template {key} and went on from it")
    assert [o for o in checks.verify(a) if not o.ok] == []
    assert [o for o in checks.verify(b) if not o.ok] == []


def test_each_clone_is_its_own_machine(twins: tuple[Workspace, Workspace]) -> None:
    facts = {}
    for ws in twins:
        facts[ws.name] = {
            "mac": ws.succeed("cat /sys/class/net/eth0/address").strip(),
            "ip": ws.host.interface("eth0").addresses,
            "hostname": ws.succeed("hostname").strip(),
            "machine-id": ws.succeed("cat /etc/machine-id").strip(),
            "host key": ws.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1],
            "random": ws.succeed("head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"),
        }
    a, b = twins
    for ws in twins:
        mine = facts[ws.name]
        assert mine["mac"] == derive.mac(ws.name)
        assert mine["ip"] == [ws.ip]
        assert mine["hostname"] == ws.name
        assert mine["machine-id"] == derive.machine_id(ws.name)
        assert ws._ssh is not None
        assert mine["host key"] == ws._ssh.host_key.split()[1]
    for fact in facts[a.name]:
        assert facts[a.name][fact] != facts[b.name][fact], fact


def test_a_clone_answers_its_first_command_with_the_lab_dns_and_its_unit_s_nic(
    config: Config, lab: Lab, twins: tuple[Workspace, Workspace]
) -> None:
    """A clone is whole when it is ready: its first command finds the lab DNS (given to
    resolved before the agent says ok), its NIC has no IPv6 link-local address and takes no
    router advertisements (as its networkd unit says, though networkd is not reloaded), and
    readiness reached its sshd once, with the login (its port probe's connection became
    the login's, instead of an sshd-session forked for nothing)."""
    with Workspace(config.workspaces["prompt"], config, lab, discard_at_stop=True) as ws:
        assert boot_of(ws).startswith("restored from template")
        rc, out, err = ws.run(f"getent hosts {twins[0].name}")
        assert rc == 0, err
        assert out.split()[:1] == [twins[0].ip], out
        assert ws.succeed("ip -6 -o addr show dev eth0 scope link").strip() == ""
        assert ws.succeed("cat /proc/sys/net/ipv6/conf/eth0/accept_ra").strip() == "0"
        log = ws.succeed("doas -n journalctl -u ssh.service --no-pager -q -o cat")
        assert log.count("Accepted publickey") == 1, log
        assert "Connection closed by" not in log, log


def test_clocks_follow_the_host(twins: tuple[Workspace, Workspace]) -> None:
    """A clone's clock is the host's, asked for once its identity is unpacked (one sent with
    the identity had left clones 1.4-2 s behind)."""
    for ws in twins:
        assert_clock_is_the_hosts(ws)


def test_clones_reach_each_other_by_name_and_the_bridge_learns_their_macs(
    twins: tuple[Workspace, Workspace], lab: Lab
) -> None:
    a, b = twins
    a.succeed(f"ping -c 1 -W 3 {b.name}")
    b.succeed(f"ping -c 1 -W 3 {a.name}")
    fdb = lab.run(["bridge", "fdb", "show", "br", lab.network.bridge])
    for ws in twins:
        tap = derive.tap_name(ws.name)
        assert any(
            line.startswith(derive.mac(ws.name)) and f"dev {tap}" in line
            for line in fdb.splitlines()
        ), fdb


def test_shares_are_plugged_in_with_their_flags(
    twins: tuple[Workspace, Workspace], config: Config
) -> None:
    rw_dir = Path(config.workspaces["twin-a"].shares[1].source)
    for ws in twins:
        assert ws.succeed("cat /srv/ro/given.txt") == "from the host\n"
        assert "ro" in ws.succeed("findmnt -n -o OPTIONS /srv/ro").split(",")
        rc, _, _ = ws.run("touch /srv/ro/nope")
        assert rc != 0
        ws.succeed(f"echo {ws.name} > /srv/rw/{ws.name}.txt")
        assert (rw_dir / f"{ws.name}.txt").read_text() == f"{ws.name}\n"
        ws.succeed("echo mine > ~/workspace/mine.txt")
        assert (ws.state_dir / "workspace" / "mine.txt").read_text() == "mine\n"


def test_units_and_journal_work(twins: tuple[Workspace, Workspace]) -> None:
    for ws in twins:
        assert ws.succeed("systemctl --failed --no-legend --plain").strip() == ""
        ws.succeed(f"logger -t wsfixture-test marker-{ws.name}")

        def logged(last: bool, ws: Workspace = ws) -> bool | None:
            _, out, _ = ws.run("doas -n journalctl -t wsfixture-test --no-pager -q")
            return True if f"marker-{ws.name}" in out else None

        assert retry_until(logged, 10, 0.5), ws.succeed("doas -n journalctl -n 20 --no-pager")
        # ... through the clone's machine directory, a link to the template's journal: no
        # "error was encountered while opening journal file" (a link to nowhere)
        rc, _, err = ws.run("doas -n journalctl -b -n 1 --no-pager")
        assert (rc, err) == (0, ""), err


def test_a_restore_while_its_image_is_rebuilt_gives_a_correct_workspace(
    config: Config, lab: Lab
) -> None:
    """The template stands on hard links of its image's files: an image rebuilt (renamed
    into place anew) under a restore changes nothing the restore reads; the next use sees
    the new build and makes the template anew."""
    rebuilt = config.workspaces["rebuilt"]
    first = Workspace(rebuilt, config, lab, discard_at_stop=True).start()  # image + template
    assert isinstance(first._backend, qemu.QemuBackend)
    image = first._backend.image
    first.stop()

    def rebuild() -> None:  # as image/build.py does: a new tree, renamed in under the lock
        staging = image.dir.with_name(image.dir.name + ".rebuilding")
        shutil.copytree(image.dir, staging, symlinks=True, copy_function=_link_but_copy_disk)
        (staging / "ready").write_text(f"{time.time()}\n")
        with FileLock(str(image.dir) + ".lock"):
            shutil.rmtree(image.dir)
            staging.rename(image.dir)

    rebuilder = threading.Thread(target=rebuild)
    during = Workspace(rebuilt, config, lab, discard_at_stop=True)
    rebuilder.start()
    try:
        during.start()
        assert boot_of(during).startswith("restored from template")
        assert during.succeed("hostname").strip() == "rebuilt"
        during.succeed("echo data > ~/data && sync && cat ~/data")
        assert during.succeed("systemctl --failed --no-legend --plain").strip() == ""
    finally:
        rebuilder.join()
        during.stop()
    with Workspace(config.workspaces["afterwards"], config, lab, discard_at_stop=True) as after:
        template = template_of(after)
        assert template.meta()["image_ready"] == (image.dir / "ready").read_text()
        assert boot_of(after) == f"made template {template.key} and went on from it"
        assert after.succeed("hostname").strip() == "afterwards"


def _link_but_copy_disk(source: str, target: str) -> None:
    if source.endswith(".ext4"):
        shutil.copy2(source, target)  # a rebuild makes a new disk file
    else:
        Path(target).hardlink_to(source)


def test_a_damaged_template_is_made_anew_by_the_vm_that_found_it(config: Config, lab: Lab) -> None:
    """A page of its guest's memory changed, the file's size the same: only the digest
    checked while the clone is loaded can tell, and the clone never runs. The VM that found
    it boots as the template, is saved, and goes on as the workspace it was to be, whole;
    the next VM of the shape is a clone of the new template. (A truncated state or memory
    file is found before QEMU reads it, as a template that is not there, and a changed
    state by its digest: unit-tested.)"""
    spec = config.workspaces["corrupt"]
    with Workspace(spec, config, lab, discard_at_stop=True) as ws:  # the template exists, whole
        template = template_of(ws)
    made = template.meta()["made"]
    with open(template.ram, "r+b") as ram:
        start, length = next(templates.data_extents(ram.fileno()))
        ram.seek(start + length // 2 // 4096 * 4096)
        ram.write(b"\xa5" * 4096)
    with Workspace(spec, config, lab, discard_at_stop=True) as ws:
        assert boot_of(ws) == f"made template {template.key} and went on from it"
        assert [o for o in checks.verify(ws) if not o.ok] == []
        assert ws.succeed("hostname").strip() == "corrupt"
        assert ws.succeed("cat /etc/machine-id").strip() == derive.machine_id("corrupt")
        assert ws.succeed("cat /sys/class/net/eth0/address").strip() == derive.mac("corrupt")
        assert ws.succeed("systemctl --failed --no-legend --plain").strip() == ""
        ws.succeed("echo mine > ~/mine && sync")
        assert template.meta()["made"] > made
        assert template.verify_state() is None
        # Its end waited for the template's own steps only: it once waited 5 s on each of
        # the VM's share daemons, which run on.
        assert template.meta()["save_seconds"] < 10, template.meta()
        with Workspace(
            config.workspaces["corrupt-next"], config, lab, discard_at_stop=True
        ) as clone:
            assert boot_of(clone) == f"restored from template {template.key}"
            assert [o for o in checks.verify(clone) if not o.ok] == []
            # What the maker wrote after the save is its own, not the template's.
            assert ws.succeed("cat ~/mine").strip() == "mine"
            assert clone.run("cat ~/mine")[0] != 0
            assert clone.succeed("cat /etc/machine-id").strip() == derive.machine_id("corrupt-next")


def test_a_discarded_clone_writes_out_its_shares_and_is_ended_without_a_shutdown(
    config: Config, lab: Lab
) -> None:
    """The pytest plugin discards its workspaces: a restored VM's agent syncs, and QEMU is
    ended, where the guest's shutdown took ~6 s of CPU beside the next test's restore.
    Controls: the same write is lost if QEMU is ended without the sync, and an orderly stop
    shows the shutdown that a discarded one skips."""

    def share(ws: Workspace) -> tuple[str, Path]:
        return "~/workspace", ws.state_dir / "workspace"

    with Workspace(config.workspaces["discarded"], config, lab) as ws:
        data, said = stopped(ws, share(ws), lambda: ws.stop(discard=True))
    assert data == WRITTEN, "a discarded VM lost what it wrote to its share"
    assert POWER_DOWN not in said, said[-2000:]

    with Workspace(config.workspaces["unsynced"], config, lab) as ws:
        assert isinstance(ws._backend, qemu.QemuBackend)
        backend = ws._backend
        data, _ = stopped(ws, share(ws), lambda: backend.qmp().command("quit"))
    assert data == bytes(10), "unsynced, the write should still have been in the guest"

    with Workspace(config.workspaces["orderly"], config, lab) as ws:
        data, said = stopped(ws, share(ws), ws.stop)
    assert data == WRITTEN
    assert POWER_DOWN in said, said[-2000:]


def test_a_template_that_cannot_be_made_gives_a_cold_boot_that_says_why(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A template boot that must finish within a second cannot: the build fails for real.
    monkeypatch.setattr(template_maker, "TEMPLATE_BOOT_TIMEOUT", 1.0)
    with Lab(config.network) as lab:
        with Workspace(config.workspaces["fallback"], config, lab) as ws:
            assert boot_of(ws).startswith("cold boot (restore failed: the guest said nothing")
            assert ws.succeed("hostname").strip() == "fallback"
            key = template_of(ws).key
        name = lab.name
    assert leftovers(name) == {}
    building = list(store.templates_dir().glob(f"{key}.building-*"))
    assert building == [], "a failed template build leaves nothing behind"


OWNER = """
import sys, time
from wsfixture.model.config import config_from_dict
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace

config = config_from_dict({config!r})
lab = Lab(config.network).__enter__()
ws = Workspace(config.workspaces["orphan"], config, lab).start()
print(ws._backend.process.pid, lab.name, flush=True)
time.sleep(600)
"""


def test_a_vm_dies_with_its_owner_though_qemu_gave_up_root(
    state_root: Path, tmp_path: Path
) -> None:
    """QEMU's -runas clears the parent-death signal: the owner watch in its cgroup ends it
    when the owner is killed outright, before any `wsfixture gc`."""
    config = {
        "defaults": {"stateRoot": str(state_root)},
        "workspaces": {"orphan": {**SHAPE, "ip": "192.168.83.46"}},
    }
    script = tmp_path / "owner.py"
    script.write_text(OWNER.format(config=config))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the owner never started its VM"
        qemu_pid, lab_name = proc.stdout.readline().split()
    finally:
        proc.kill()  # SIGKILL: no handler runs, no teardown
        proc.wait()

    def gone(last: bool) -> bool | None:
        return True if not Path(f"/proc/{qemu_pid}").exists() else None

    assert retry_until(gone, 15, 0.2), "QEMU outlived its owner"
    gc = subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", "gc"], capture_output=True, text=True, check=False
    )
    assert gc.returncode == 0, gc.stderr
    assert leftovers(lab_name) == {}
