import json
import socket
import threading

import pytest

from wsfixture.backends.qemu.backend import kernel_panic
from wsfixture.backends.qemu.qmp import QmpClient, QmpError
from wsfixture.errors import PrerequisiteError
from wsfixture.host.virt import choose_accel, clamp_resources


def test_pvm_host_chooses_tcg_without_a_boot() -> None:
    accel = choose_accel("auto", kvm_opens=True, cpu_flags={"sse2", "hypervisor"})
    assert accel.name == "tcg"
    assert "no vmx/svm" in accel.reason


def test_real_kvm_is_used() -> None:
    assert choose_accel("auto", True, {"vmx"}).name == "kvm"
    assert choose_accel("auto", True, {"svm"}).name == "kvm"
    assert choose_accel("auto", False, {"vmx"}).name == "tcg"


def test_forced_accelerators() -> None:
    assert choose_accel("tcg", True, {"vmx"}).name == "tcg"
    assert choose_accel("kvm", True, set()).name == "kvm"
    with pytest.raises(PrerequisiteError, match="/dev/kvm"):
        choose_accel("kvm", False, {"vmx"})


def test_clamp_resources() -> None:
    assert clamp_resources(8, 4096, 2, 24000) == (2, 4096, ["vcpu 8 clamped to the host's 2 CPUs"])
    cpus, mib, warnings = clamp_resources(1, 65536, 4, 8000)
    assert (cpus, mib) == (1, 4000)
    assert "memory" in warnings[0]


def fake_qmp_server(sock: socket.socket, replies: dict[str, object]) -> None:
    f = sock.makefile("rwb")
    f.write(json.dumps({"QMP": {"version": {}, "capabilities": []}}).encode() + b"\n")
    f.flush()
    for line in f:
        cmd = json.loads(line)["execute"]
        f.write(json.dumps({"event": "SOMETHING", "data": {}}).encode() + b"\n")
        reply = replies.get(cmd, {"error": {"desc": f"unknown {cmd}"}})
        f.write(json.dumps(reply).encode() + b"\n")
        f.flush()


def test_qmp_client_against_fake_server() -> None:
    ours, theirs = socket.socketpair()
    replies = {
        "qmp_capabilities": {"return": {}},
        "query-status": {"return": {"status": "running"}},
    }
    threading.Thread(target=fake_qmp_server, args=(theirs, replies), daemon=True).start()
    client = QmpClient(ours)
    assert client.command("query-status") == {"status": "running"}
    assert client.events
    with pytest.raises(QmpError, match="unknown quit"):
        client.command("quit")
    client.close()


def test_a_host_fact_is_said_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    from wsfixture.backends.qemu import backend as qemu

    caplog.set_level("INFO", logger="wsfixture.qemu")
    for _ in range(3):
        qemu.say_once(30, "vcpu 8 clamped to the host's 2 CPUs (a test's own message)")
    assert caplog.text.count("clamped to the host's 2 CPUs (a test's own message)") == 1


def test_a_guest_kernel_panic_is_named_by_its_own_line() -> None:
    console = (
        "[    2.1] Run /bin/false as init process\n"
        "[    2.3] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n"
        "[    2.3] CPU: 0 UID: 0 PID: 1 Comm: false Not tainted\n"
        "[    2.4] Call Trace:\n"
    )
    said = kernel_panic(console)
    assert said == "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
    assert kernel_panic("[    2.1] Run /bin/false as init process\n") is None


def test_a_rw_share_s_daemon_is_entered_mapped_and_stripped_of_device_and_caps() -> None:
    """Its user namespace by our fd, the share bound at /mnt in a mount namespace of its
    own, its socket our fd, no mknod nor setfcap; a read-only one serves a read-only view."""
    from pathlib import Path

    from wsfixture.backends.qemu import argv

    mapped = argv.mapped_virtiofsd("/usr/bin/nsenter", "/vfsd", Path("/srv/s"), 7, 9)
    at = mapped.index("/usr/bin/nsenter")
    assert mapped[at : at + 4] == ["/usr/bin/nsenter", "--user=/proc/self/fd/7", "--", "/vfsd"]
    assert "--fd=9" in mapped
    assert "source=/mnt" in mapped
    assert mapped[-2:] == ["-o", "modcaps=-mknod:-setfcap"]
    assert "/srv/s" in " ".join(mapped[:at])  # bound in the private view before it runs
    read_only = argv.read_only_virtiofsd("/vfsd", Path("/srv/r"), Path("/run/x.sock"))
    assert read_only[: read_only.index("/vfsd")] == argv.read_only_view(Path("/srv/r"))
    assert "--socket-path=/run/x.sock" in read_only
    assert "source=/srv/r" in read_only
