"""The VM seed: how a VM learns which workspace it is. The host writes it, the guest reads
it; both sides of the format are here.

The seed is a tar (GNU format) of files to unpack over ``/`` — the shared base of
``wsfixture.guest.identity`` plus ``MOUNTS_FILE``, one ``tag target fstype options`` line per
share — passed to QEMU as the fw_cfg file ``SEED_FW_CFG``. In the guest, ``SEED_UNIT`` runs
``SEED_SCRIPT identity`` before networkd and sshd, and ``SHARES_UNIT`` runs
``SEED_SCRIPT shares``.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path

MOUNTS_FILE = "etc/wsfixture/mounts"
# Units the seed asks to start once it is unpacked (one per line): how a VM template's
# restore agent (``wsfixture.guest.restore``) runs without being part of the image.
START_UNITS_FILE = "etc/wsfixture/start-units"
# Per-VM identity arrives as a tar through fw_cfg; one unit unpacks it before the network,
# resolved (the lab DNS is its setting) and sshd start, so nothing depends on udev noticing
# a disk in time. Another mounts the shares, before sshd but beside networkd's start: under
# TCG each took a second or two on the way to sshd when one unit did both.
SEED_FW_CFG = "opt/wsfixture/seed"
SEED_SCRIPT = f"""\
#!/bin/sh
# wsfixture: install this VM's identity (hostname, network, keys, user) from fw_cfg
# ("identity"), or mount its shares ("shares").
set -eu
if [ "$1" = identity ]; then
  modprobe qemu_fw_cfg
  seed=/sys/firmware/qemu_fw_cfg/by_name/{SEED_FW_CFG}/raw
  tar -x --numeric-owner -p -f "$seed" -C /
  hostname "$(cat /etc/hostname)"
  if [ -f /{START_UNITS_FILE} ]; then
    xargs -r systemctl --no-block start < /{START_UNITS_FILE}
  fi
elif [ -f /{MOUNTS_FILE} ]; then
  # One "tag target fstype options" line each: an fstab, whose every share one `mount -a`
  # mounts (it skips those mounted already): one program, where one each cost a restored
  # VM's CPU ~50 ms apiece under TCG. A share hot-plugged into a restored VM may take a
  # moment to appear: WSFIXTURE_MOUNT_TRIES tries, 50 ms apart.
  while read -r tag target rest; do
    [ -d "$target" ] || mkdir -p "$target"
  done < /{MOUNTS_FILE}
  tries=${{WSFIXTURE_MOUNT_TRIES:-1}}
  until mount -a -T /{MOUNTS_FILE} 2>/run/wsfixture-mount.log; do
    tries=$((tries - 1))
    if [ "$tries" -le 0 ]; then
      cat /run/wsfixture-mount.log >&2
      exit 1
    fi
    sleep 0.05
  done
fi
"""
SEED_UNIT = """\
[Unit]
Description=wsfixture: install this VM's identity from fw_cfg
DefaultDependencies=no
After=systemd-remount-fs.service local-fs.target
Before=systemd-networkd.service systemd-resolved.service ssh.service network-pre.target
Before=systemd-user-sessions.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/wsfixture-seed identity

[Install]
WantedBy=sysinit.target
"""
SHARES_UNIT = """\
[Unit]
Description=wsfixture: mount this VM's shares
DefaultDependencies=no
After=wsfixture-seed.service local-fs.target
Requires=wsfixture-seed.service
Before=ssh.service systemd-user-sessions.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/wsfixture-seed shares

[Install]
WantedBy=sysinit.target
"""


def mount_table(shares: Iterable[tuple[str, str, bool]], transport: str) -> str:
    """``MOUNTS_FILE``'s text: (tag, guest path, read-only) per share, over ``transport``
    ("virtiofs" or "9p")."""
    fstype, extra = (
        ("virtiofs", "") if transport == "virtiofs" else ("9p", ",trans=virtio,version=9p2000.L")
    )
    return "".join(
        f"{tag} {target} {fstype} {'ro' if read_only else 'rw'},relatime{extra}\n"
        for tag, target, read_only in shares
    )


def pack(staging: Path, mounts: str, seed: Path) -> None:
    """Write the seed: the tree in ``staging`` plus the mount table, as a tar at ``seed``;
    ``staging`` is removed."""
    table = staging / MOUNTS_FILE
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(mounts)
    for line in mounts.splitlines():  # mount points made here spare the guest a mkdir each
        (staging / line.split()[1].lstrip("/")).mkdir(parents=True, exist_ok=True)
    with tarfile.open(seed, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(staging, arcname=".", recursive=True)
    shutil.rmtree(staging)
