"""VM workspaces for real: QEMU (TCG here, KVM where it works), same handle as containers.

VM boots take ~20 s under TCG on this machine kind, so read-only tests share one VM.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.configs import booted
from tests.support.leaks import leftovers, processes_with_cmdline
from wsfixture import PrerequisiteError, StartError, checks, remote
from wsfixture.backends import qemu
from wsfixture.errors import CheckpointError
from wsfixture.host import virt
from wsfixture.host.virt import host_accel, vsock_available
from wsfixture.image import cache as imagecache
from wsfixture.image import setid
from wsfixture.model.config import Config, workspace_spec
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def vm(config: Config, lab: Lab) -> Iterator[Workspace]:
    with Workspace(config.workspaces["vmone"], config, lab) as ws:
        yield ws


@pytest.fixture(scope="module")
def peer(config: Config, lab: Lab) -> Iterator[Workspace]:
    with Workspace(config.workspaces["alpha"], config, lab) as ws:
        yield ws


def test_vm_passes_every_builtin_check(vm: Workspace) -> None:
    assert [o for o in checks.verify(vm) if not o.ok] == []


def test_vm_looks_like_a_container_to_tests(vm: Workspace) -> None:
    assert vm.describe()["boot"] == "cold boot (snapshot = 'off')"
    host = vm.host
    assert host.service("ssh").is_running
    assert host.interface("eth0").addresses[0] == "192.168.83.20"
    assert host.user("dev").uid == 1000
    assert host.run("doas -n true").rc == 0
    assert vm.succeed("doas -n -u nobody id -un") == "nobody\n"  # host.sudo("nobody") works
    assert vm.conn.run("hostname", hide=True).stdout.strip() == "vmone"
    facts = vm.describe()
    assert facts["accel"] == host_accel("auto").name
    assert facts["vcpu"] == 2


def test_vm_from_a_package_layer(vm: Workspace) -> None:
    """vmone asks for curl: its disk is the base plus a layer apt installed."""
    assert vm.host.package("curl").is_installed
    assert vm.host.file("/etc/resolv.conf").linked_to == "/run/systemd/resolve/stub-resolv.conf"
    assert vm.host.run("curl --version").rc == 0
    # QEMU holds the layer's disk open: a prune leaves that image (and its base) alone.
    assert isinstance(vm._backend, qemu.QemuBackend)
    assert vm._backend.image.dir.name in imagecache.busy_keys(imagecache.cached_images())


def test_a_vm_has_its_releases_setuid_files_and_the_host_tree_has_none(vm: Workspace) -> None:
    """The guest's privileged files (the base's, under vmone's package layer) are in its
    disk as its release ships them; on the host, the image's trees hold none of them."""
    assert vm.host.file("/usr/bin/su").mode == 0o4755
    assert vm.host.file("/usr/bin/chage").mode == 0o2755
    assert "cap_net_raw" in vm.succeed("/usr/sbin/getcap /usr/bin/ping")
    assert "uid=0(root)" in vm.succeed("doas -n id")  # doas is setuid root, as in the base
    assert isinstance(vm._backend, qemu.QemuBackend)
    image = vm._backend.image
    assert image.base is not None
    listed = {entry.path for entry in setid.load(image.base.dir)}
    assert {"usr/bin/su", "usr/bin/chage", "usr/bin/ping", "usr/bin/doas"} <= listed
    for layer in image.layers:
        for directory, _dirs, files in os.walk(layer):
            for name in files:
                path = os.path.join(directory, name)
                assert not os.lstat(path).st_mode & 0o6000, path
                assert "security.capability" not in os.listxattr(path, follow_symlinks=False)


def test_testinfra_knows_the_system_from_the_image(vm: Workspace, peer: Workspace) -> None:
    """``host.system_info`` is read from the image, no command run for it, and it is what
    testinfra finds when it asks the guest (the control: asking runs commands)."""
    for ws in (vm, peer):
        assert ws._ssh is not None
        before = ws._ssh.commands_run
        known = ws.host.system_info.sysinfo
        assert ws.host.file("/etc/debian_version").is_file  # GNU's file module, from it
        assert ws._ssh.commands_run == before + 1, "one command: the file check's"
        asked = remote.host_over(ws._ssh, None, "doas").system_info.sysinfo
        assert ws._ssh.commands_run > before + 1
        assert known == asked, ws.name
        assert (known["type"], known["distribution"]) == ("linux", "debian")


def test_container_and_vm_reach_each_other_by_name(vm: Workspace, peer: Workspace) -> None:
    vm.succeed("ping -c 1 -W 3 alpha")
    peer.succeed("ping -c 1 -W 3 workspace-vmone")


def test_virtiofs_share_is_writable_with_right_owner(vm: Workspace) -> None:
    assert "virtiofs" in vm.succeed("findmnt -n -o FSTYPE /home/dev/workspace")
    vm.succeed("echo from-vm > ~/workspace/vm.txt")
    made = vm.state_dir / "workspace" / "vm.txt"
    assert made.read_text() == "from-vm\n"
    assert made.stat().st_uid == 1000
    assert "ro" in vm.succeed("findmnt -n -o OPTIONS /etc/ssh/host-keys").split(",")


def test_vm_host_key_survives_restart_and_nothing_leaks(config: Config) -> None:
    spec = workspace_spec(config, name="vmtwo", type="vm", ip="192.168.83.21", vcpu=2, memory=1024)
    with Lab(config.network) as lab:
        ws = Workspace(spec, config, lab).start()
        assert ws._ssh is not None
        first = ws._ssh.host_key
        presented = ws._ssh.client().get_transport().get_remote_server_key().get_base64()
        ws.stop()
        ws.start()
        assert ws._ssh is not None
        again = ws._ssh.client().get_transport().get_remote_server_key().get_base64()
        ws.stop()
        assert presented == again == first.split()[1]
        name = lab.name
    assert leftovers(name) == {}
    assert processes_with_cmdline(f"labs/{name}/") == [], "no qemu or virtiofsd left"


def test_vm_that_dies_fails_fast_with_the_reason(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An init that exits at once: the kernel panics and QEMU exits (panic=-1, -no-reboot).
    original = qemu.QemuBackend.kernel_cmdline
    monkeypatch.setattr(
        qemu.QemuBackend,
        "kernel_cmdline",
        lambda self, machine_id_of: original(self, machine_id_of) + " init=/bin/false",
    )
    spec = workspace_spec(
        config, name="vmbad", type="vm", ip="192.168.83.22", vcpu=1, memory=512, snapshot="off"
    )
    with Lab(config.network) as lab:
        with pytest.raises(StartError) as info:
            Workspace(spec, config, lab, timeout=120).start()
        assert "exited" in info.value.reason or "state" in info.value.reason
        # The panic's reason is in the error's reason: the console's last 40 lines, also in
        # it, may hold only the panic's call trace (seen in CI).
        assert "Kernel panic - not syncing: Attempted to kill init!" in info.value.reason
        assert "Call Trace" in info.value.console_tail
        name = lab.name
    assert leftovers(name) == {}


def test_a_vm_runs_under_kvm_where_the_host_can(vm: Workspace) -> None:
    accel = host_accel("auto")
    if accel.name != "kvm":
        pytest.skip(f"this machine kind cannot run KVM guests: {accel.reason}")
    assert vm.describe()["accel"] == "kvm"
    assert vm.succeed("systemd-detect-virt").strip() == "kvm"


def test_vsock_required_needs_the_device(config: Config, lab: Lab) -> None:
    if vsock_available():
        pytest.skip("this host has /dev/vhost-vsock; the refusal path cannot be shown here")
    from wsfixture import PrerequisiteError

    spec = workspace_spec(config, name="vsockvm", type="vm", ip="192.168.83.23", vsock="required")
    with pytest.raises(PrerequisiteError, match="vhost-vsock"):
        Workspace(spec, config, lab).start()
    assert not (lab.dir / "vsockvm").exists()


def test_microvm_machine(config: Config) -> None:
    # `machine = "microvm"`: virtio-mmio (force-legacy off, or virtiofsd panics) and
    # tsc_early_khz; booted cold, as it has no PCIe slot to hot-plug shares into.
    spec = workspace_spec(
        config, name="vmmicro", type="vm", ip="192.168.83.24", vcpu=1, memory=768, machine="microvm"
    )
    with booted(config, spec) as [ws]:
        facts = ws.describe()
        assert facts["machine"] == "microvm"
        assert facts["shares"] == "virtiofs"
        assert str(facts["boot"]).startswith("cold boot")
        assert ws.succeed("findmnt -n -o FSTYPE /home/dev/workspace").strip() == "virtiofs"
        ws.succeed("echo over-mmio > ~/workspace/mmio.txt")
        made = ws.state_dir / "workspace" / "mmio.txt"
        assert made.read_text() == "over-mmio\n"
        assert made.stat().st_uid == 1000
        assert [o for o in checks.verify(ws) if not o.ok] == []


def test_without_virtiofsd_rw_shares_are_refused_before_anything_is_made(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # QEMU serves 9p itself, as host root, with the guest's owners and modes: a rw share
    # over it would make the guest's root host root there. Every VM has rw shares.
    monkeypatch.setattr(virt, "VIRTIOFSD", "/nonexistent/virtiofsd")
    spec = workspace_spec(config, name="vmnine", type="vm", ip="192.168.83.25", vcpu=1, memory=768)
    with Lab(config.network) as lab:
        with pytest.raises(PrerequisiteError, match="served over 9p as host root") as info:
            Workspace(spec, config, lab).start()
        assert "qemu-system-common" in str(info.value)
        assert not (lab.dir / "vmnine").exists(), "nothing of the workspace was left"
        name = lab.name
    assert leftovers(name) == {}


def test_the_vm_user_edits_what_the_host_user_put_in_the_share(vm: Workspace) -> None:
    dropped = vm.state_dir / "workspace" / "from-host.txt"
    dropped.write_text("written on the host\n")
    os.chown(dropped, 1000, 1000)
    inside = "/home/dev/workspace/from-host.txt"
    assert vm.succeed(f"stat -c %U:%G {inside}").strip() == "dev:dev"
    vm.succeed(f"echo edited inside >> {inside}")
    assert dropped.read_text() == "written on the host\nedited inside\n"


def test_a_cold_booted_vm_refuses_a_checkpoint_and_makes_nothing(vm: Workspace) -> None:
    """Only a restored VM has the agent that lets go of its shares for a save."""
    with pytest.raises(CheckpointError) as refused:
        vm.checkpoint("cold")
    assert "only a VM restored from a template can be checkpointed" in str(refused.value)
    assert "cold boot (snapshot = 'off')" in str(refused.value)
    assert vm.checkpoints() == []
    assert not vm._checkpointing.store.root.exists()


def test_a_vm_flooding_its_serial_port_fills_no_disk(vm: Workspace) -> None:
    from tests.reliability.test_security import console_flood

    console_flood(vm, "/dev/ttyS0", 6, 1 * 2**20)


def test_a_partition_pause_and_clock_of_a_vm(vm: Workspace, peer: Workspace) -> None:
    """Faults on a VM and a container, as on two containers: a partition cuts both ways
    and heals; a delay on the VM's port slows its round trips (outside the guest, as a
    container's); a paused VM answers nothing and goes on with the same processes; its
    clock is set ahead and back (a container's cannot be: it is the host kernel's)."""
    import re
    import time

    from tests.integration.test_partitions import pause_and_resume, reaches
    from wsfixture.errors import FaultError
    from wsfixture.workspaces.faults import Faults

    faults = Faults(vm.lab)
    try:
        assert reaches(peer, vm)  # control
        with faults.partition([vm], [peer]):
            assert not reaches(peer, vm)
            assert not reaches(vm, peer)
            assert vm.succeed("true") == "", "the test's channel is not cut"
        assert reaches(vm, peer)

        def round_trips() -> list[float]:
            out = vm.succeed(f"ping -c 4 -i 0.2 -W 2 {peer.ip}", timeout=30)
            return [float(t) for t in re.findall(r"time=([0-9.]+) ms", out)]

        assert max(round_trips()) < 100  # control
        with faults.shape(vm, delay=150):
            delayed = round_trips()
            assert len(delayed) == 4, delayed
            assert min(delayed) >= 150, delayed
        assert max(round_trips()) < 100
    finally:
        faults.heal()

    def its_kernel_answers_no_ping() -> None:  # a container's would: the host's kernel
        assert not reaches(peer, vm), "a stopped VM answers nothing, its kernel neither"

    pause_and_resume(vm, peer, its_kernel_answers_no_ping, wait=30.0)
    vm.clock_offset(3600)
    try:
        ahead = float(vm.succeed("date +%s.%N")) - time.time()
        assert 3598 < ahead < 3603, ahead
    finally:
        vm.clock_offset(0)
    assert abs(float(vm.succeed("date +%s.%N")) - time.time()) < 2
    with pytest.raises(FaultError, match="a container shares the host kernel's wall clock"):
        peer.clock_offset(60)
