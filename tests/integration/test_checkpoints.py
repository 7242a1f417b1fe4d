"""Checkpoints and rollback on real workspaces, a container and a VM restored from its
template: a broken system rolled back to a working one, chains of checkpoints, the shares
never rolled back, and bad requests refused with nothing changed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.support.clock import assert_clock_is_the_hosts
from tests.support.configs import make_config
from wsfixture import checks
from wsfixture.errors import CheckpointError
from wsfixture.model import derive
from wsfixture.model.config import Config
from wsfixture.workspaces import Workspace

SHAPES = {
    "ck-container": {"type": "container"},
    "ck-vm": {"type": "vm", "vcpu": 1, "memory": 768},  # the bench's shape: its template
}
PROBE = "wsfixture-probe"


@pytest.fixture(scope="module")
def config(state_root: Path) -> Config:
    return make_config(state_root, **SHAPES)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("ck-container"),
        pytest.param("ck-vm", marks=pytest.mark.vm),
    ],
)
def ws(request: pytest.FixtureRequest, running: dict[str, Workspace]) -> Workspace:
    return running[request.param]


@pytest.fixture(scope="module")
def probe_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package to install without a network: built here with dpkg-deb."""
    top = tmp_path_factory.mktemp("deb")
    root = top / "root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {PROBE}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: wsfixture tests <tests@example.invalid>\n"
        "Description: a package a checkpoint test installs offline\n"
    )
    tool = root / "usr" / "bin" / PROBE
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho probe works\n")
    tool.chmod(0o755)
    deb = top / f"{PROBE}.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
                   check=True, capture_output=True)  # fmt: skip
    return deb


SSH_UNIT = "/usr/lib/systemd/system/ssh.service"  # gone, sshd would not start at the next boot


def test_a_rollback_undoes_a_broken_system(ws: Workspace, probe_deb: Path) -> None:
    ws.put(probe_deb, "/tmp/probe.deb")
    ws.succeed("doas dpkg -i /tmp/probe.deb && echo before | doas tee /etc/ck-marker")
    saved = ws.checkpoint("installed")
    assert (saved.tag, saved.kind) == ("installed", ws.spec.type)
    assert [c.tag for c in ws.checkpoints()] == ["installed"]
    # After the checkpoint: a file in the share (the user's data), and a broken system:
    # no apt, no sshd unit, the package gone, the marker changed.
    ws.succeed("echo written-after > ~/workspace/after-checkpoint.txt")
    ws.succeed(
        f"doas rm /usr/bin/apt {SSH_UNIT} && doas dpkg -r {PROBE} "
        "&& doas systemctl daemon-reload && echo after | doas tee /etc/ck-marker"
    )
    assert not ws.host.file(SSH_UNIT).exists
    assert ws.run("test -e /usr/bin/apt")[0] == 1

    ws.rollback("installed")

    assert [o for o in checks.verify(ws) if not o.ok] == []
    assert ws.succeed("cat /etc/ck-marker").strip() == "before"
    assert ws.succeed(PROBE).strip() == "probe works"
    assert ws.host.package(PROBE).is_installed
    assert ws.host.file("/usr/bin/apt").exists
    assert ws.host.file(SSH_UNIT).exists
    # The share is never rolled back.
    assert ws.succeed("cat ~/workspace/after-checkpoint.txt").strip() == "written-after"
    # The same machine: name, address, MAC, pinned host key (the login above proves it).
    assert ws.succeed("hostname").strip() == ws.name
    nic = "eth0"  # both kinds' (a container's is named so inside)
    assert ws.succeed(f"cat /sys/class/net/{nic}/address").strip() == derive.mac(ws.name)
    assert ws.host.interface(nic).addresses == [ws.ip]
    assert ws.conn.run("id -un", hide=True).stdout.strip() == ws.user


def test_two_checkpoints_and_back_to_the_older(ws: Workspace) -> None:
    ws.succeed("echo 1 | doas tee /etc/ck-step")
    ws.checkpoint("step-1")
    ws.succeed("echo 2 | doas tee /etc/ck-step")
    ws.checkpoint("step-2")
    ws.succeed("echo 3 | doas tee /etc/ck-step")
    ws.rollback("step-1")
    assert ws.succeed("cat /etc/ck-step").strip() == "1"
    ws.rollback("step-2")  # forward again: the newer one is still there
    assert ws.succeed("cat /etc/ck-step").strip() == "2"
    # A checkpoint of a rolled-back workspace stands on the one it came from.
    ws.succeed("echo 2b | doas tee /etc/ck-step")
    ws.checkpoint("step-2b")
    ws.rollback("step-1")
    ws.rollback("step-2b")
    assert ws.succeed("cat /etc/ck-step").strip() == "2b"
    ws.delete_checkpoint("step-2")  # step-2b stands on it: kept as a layer, untagged
    assert "step-2" not in [c.tag for c in ws.checkpoints()]
    ws.rollback("step-1")
    ws.rollback("step-2b")
    assert ws.succeed("cat /etc/ck-step").strip() == "2b"


def test_the_clock_is_the_host_s_after_a_checkpoint_and_a_rollback(ws: Workspace) -> None:
    """A VM's clock stands still while it is paused for a checkpoint, and a rollback starts
    from the checkpoint's time: the guest asks the host for the time as it resumes. (A
    container's clock is the host's.)"""
    ws.checkpoint("clock")
    assert_clock_is_the_hosts(ws)
    time.sleep(3)  # a rollback that kept the checkpoint's time would be this far behind
    ws.rollback("clock")
    assert_clock_is_the_hosts(ws)
    ws.delete_checkpoint("clock")


def test_bad_requests_change_nothing(ws: Workspace) -> None:
    before = sorted(p.name for p in ws._checkpointing.store.root.iterdir())
    with pytest.raises(CheckpointError, match=r"no checkpoint tagged 'nope'.*known: "):
        ws.rollback("nope")
    with pytest.raises(CheckpointError, match="checkpoint tag 'a/b' is not allowed"):
        ws.checkpoint("a/b")
    ws.checkpoint("once")
    with pytest.raises(CheckpointError, match="a checkpoint tagged 'once' exists already"):
        ws.checkpoint("once")
    assert sorted(p.name for p in ws._checkpointing.store.root.iterdir()) == sorted(
        [*before, str(ws.checkpoints()[-1].seq)]
    )
    handle = Workspace(ws.spec, ws.config, ws.lab)  # never started
    with pytest.raises(CheckpointError, match="cannot checkpoint: this handle is new"):
        handle.checkpoint()


@pytest.mark.vm
def test_a_busy_share_refuses_a_vm_checkpoint(running: dict[str, Workspace]) -> None:
    vm = running["ck-vm"]
    vm.succeed("echo mine > ~/workspace/busy.txt")
    held = vm.spawn("cd ~/workspace && exec sleep 300")
    try:
        with pytest.raises(CheckpointError, match=r"workspace is in use \(pid:command \d+:sleep"):
            vm.checkpoint("busy")
        assert "busy" not in [c.tag for c in vm.checkpoints()]
        # Nothing was changed: every share is still mounted and answers.
        assert vm.succeed("cat ~/workspace/busy.txt").strip() == "mine"
        assert [o for o in checks.verify(vm) if not o.ok] == []
    finally:
        held.kill()
    vm.checkpoint("idle")  # the positive control: the same request, the share let go
