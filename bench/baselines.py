"""The baselines our figures stand beside: the same machine started by hand (raw
systemd-nspawn, raw QEMU), and the peer stack (testcontainers on podman)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import (
    HERE,
    say,
)

from wsfixture.image.obtain import ensure_image
from wsfixture.image.recipe import ImageRecipe
from wsfixture.workspaces import Workspace


def raw_nspawn_argv(ws: Workspace) -> list[str]:
    """What a person would run by hand: the same tree and flags, nspawn's own bridge veth."""
    from wsfixture.backends.nspawn import NspawnBackend

    assert isinstance(ws._backend, NspawnBackend)
    return ws._backend.argv(own_veth=False)


def raw_nspawn_argv_without_userns(ws: Workspace) -> list[str]:
    """The same container without the user namespace, to show what the namespace itself
    costs: on a copy of its provisioned tree with the ownership shifted back (untimed)."""
    from wsfixture.backends.nspawn import NspawnBackend
    from wsfixture.guest.osconfig import shift_ownership
    from wsfixture.model.share_ids import CONTAINER_UID_BASE

    assert isinstance(ws._backend, NspawnBackend)
    plain = ws._runtime_dir.parent / f"{ws.name}-plain-root"
    subprocess.run(["cp", "-a", str(ws._backend.root), str(plain)], check=True)
    shift_ownership(plain, -CONTAINER_UID_BASE)
    ws.lab.adopt_dir(plain)  # goes with the lab
    return ws._backend.argv(own_veth=False, user_namespace=False, root=plain)


def fresh_disk(ws: Workspace) -> None:
    """A workspace boots a new qcow2 overlay every time, first-boot work (growing the root
    filesystem to the disk size) included; so does each raw run, on the same base disk."""
    from wsfixture.backends.qemu import QemuBackend

    assert isinstance(ws._backend, QemuBackend)
    ws._backend.create_overlay()


def raw_qemu_argv(ws: Workspace) -> list[str]:
    """The same kernel, initrd, disk, seed, TAP, accelerator and flags; without the virtiofs
    devices (their daemons exit with the VM), so the baseline does less than we do."""
    from wsfixture.backends.qemu import QemuBackend

    assert isinstance(ws._backend, QemuBackend)
    return ws.lab.exec_argv(ws._backend.argv(ws._backend.cold_boot(), shares=False))


PEER_VENV = HERE / ".peer-venv"


def peer_ready() -> bool:
    return shutil.which("podman") is not None and (PEER_VENV / "bin" / "pytest").exists()


def setup_peer(state: Path) -> None:
    """podman + runc from Debian, testcontainers in a venv of its own, our base image imported."""
    if shutil.which("podman") is None or shutil.which("runc") is None:
        say("peer: installing podman and runc (apt)")
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "podman", "runc"],
            check=True,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
            stdout=subprocess.DEVNULL,
        )
    if not (PEER_VENV / "bin" / "pytest").exists():
        say("peer: creating its venv (testcontainers, pytest-testinfra, pytest-xdist)")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [
                str(PEER_VENV / "bin" / "pip"),
                "install",
                "-q",
                "pytest",
                "pytest-testinfra",
                "pytest-xdist",
                "testcontainers",
            ],
            check=True,
        )
    env = dict(os.environ, CONTAINERS_CONF=str(HERE / "peer" / "containers.conf"))
    have = subprocess.run(["podman", "image", "exists", "localhost/wsbase"], env=env, check=False)
    if have.returncode != 0:
        say("peer: importing our container base image into podman")
        image = ensure_image(ImageRecipe.for_packages(()))
        tar = subprocess.Popen(["tar", "-C", str(image.root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "-", "localhost/wsbase:latest"],
            stdin=tar.stdout,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tar.wait()
