"""Container workspaces on systemd-nspawn.

The root is an overlay: the cached base image below, the workspace's own upper layer above,
into which the shared base is written before boot. nspawn runs as our child inside the lab
namespace (``nsenter --net``, not ``ip netns exec``: that remounts /sys and nspawn then
cannot see the cgroup hierarchy), in a cgroup of its own so ``cgroup.kill`` can end it all.
PID 1 on the host may not be systemd, hence ``--register=no --keep-unit``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from wsfixture.backends.base import Backend, BackendContext
from wsfixture.guest import osconfig
from wsfixture.host import freezer, idmap, system
from wsfixture.image.recipe import Image
from wsfixture.model import derive, share_ids
from wsfixture.retry import retry_until

UPPER = "upper"  # a checkpoint's copy of the container's upper layer


class NspawnBackend(Backend):
    kind = "container"
    ready_timeout = 60.0
    stop_timeout = 10.0

    def __init__(self, ctx: BackendContext, image: Image) -> None:
        super().__init__(ctx, image)
        run = self.ctx.runtime_dir
        self.upper, self.work, self.root = run / "upper", run / "work", run / "root"
        self.layer = run / "layer"  # where upper and work live when `disk` bounds them
        self.mapped_shares = run / "shares"
        # Checkpoint layers the root stands on, above the image's (after a rollback).
        self.checkpoint_layers: list[Path] = []

    def mapped_share(self, tag: str) -> Path:
        """Where a rw share's idmapped mount is made for nspawn to bind from."""
        return self.mapped_shares / tag

    def argv(
        self, own_veth: bool = True, user_namespace: bool = True, root: Path | None = None
    ) -> list[str]:
        """nspawn's command line, in the lab. The benchmarks' raw baselines ask for what a
        person would run by hand: nspawn's own bridge port (``own_veth=False``), no user
        namespace (over a tree shifted back, ``root``)."""
        spec, lab = self.ctx.spec, self.ctx.lab
        # A rw share is bound from its own idmapped mount (``model.share_ids``: the user's
        # files are the share owner's, root's an unprivileged host id's). A read-only one
        # keeps nspawn's idmap, one to one: its files keep their owners inside.
        idmap_suffix = ":idmap" if user_namespace else ""
        binds = [
            f"--bind-ro={source}:{target}{idmap_suffix}"
            if read_only
            else f"--bind={self.mapped_share(tag)}:{target}"
            for tag, source, target, read_only in self.shares()
        ]
        network = (
            f"--network-veth-extra={derive.veth_host_name(spec.name)}:eth0"
            if own_veth
            else f"--network-bridge={lab.network.bridge}"
        )
        nspawn = [
            system.require_tool("systemd-nspawn"),
            "--boot",
            f"--directory={root or self.root}",
            f"--machine={spec.name}",
            "--register=no",
            "--keep-unit",
            network,
            "--console=read-only",
            "--link-journal=no",
            "--resolv-conf=off",
            "--timezone=off",
            "--kill-signal=SIGRTMIN+4",  # poweroff, not halt
            *(osconfig.NSPAWN_USER_NAMESPACE if user_namespace else ()),
            # File capabilities are setuid by another name; with the setid filter the
            # container's root cannot make either, in a share or in its own tree.
            "--drop-capability=CAP_SETFCAP",
            *binds,
            "--",
            "--show-status=yes",
        ]
        return lab.exec_argv(nspawn)

    def start(self) -> None:
        record = self.ctx.record
        if self.resources.disk is not None:
            self._mount_sized_layer(self.resources.disk)
        for directory in (self.upper, self.work, self.root):
            directory.mkdir(parents=True, exist_ok=True)
        # The merged root directory takes the upper's owner: the containers' root.
        os.chown(self.upper, share_ids.CONTAINER_UID_BASE, share_ids.CONTAINER_UID_BASE)
        lower = ":".join(str(layer) for layer in [*self.checkpoint_layers, *self.image.layers])
        options = f"lowerdir={lower},upperdir={self.upper},workdir={self.work}"
        record.add_mount(self.root)
        system.run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)])
        self.ctx.provision(self.root, share_ids.CONTAINER_UID_BASE)
        self._map_shares()
        # TERM=dumb: the console log is read as plain text, without colour escapes.
        env = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "TERM": "dumb"}
        self.guard_port(derive.veth_host_name(self.ctx.spec.name))
        self.enforce(self.resources)  # none unless set: the seed's containers are unbounded
        # The whole container under the setid filter: no setuid, setgid (nor, without
        # CAP_SETFCAP, capability-bearing) file anywhere, a share included.
        self.process = self.spawn(
            self.argv(), self.cgroup, self.console_log, env, setid_filter="setid"
        )
        self._attach_veth()

    def checkpoint(self, into: Path, final: Path, seq: int, commit: Callable[[], None]) -> str:
        """The upper layer copied while every process of the container is frozen: what it
        wrote so far, consistent; it runs on as it was."""
        started = time.monotonic()
        with freezer.frozen(self.ctx.spec.name, self.cgroup):
            frozen = time.monotonic()
            system.run(["cp", "-a", "--reflink=auto", str(self.upper), str(into / UPPER)])
            copied = time.monotonic()
        commit()
        return (f"frozen {frozen - started:.2f}s, upper copied {copied - frozen:.2f}s, "
                f"thawed {time.monotonic() - copied:.2f}s")  # fmt: skip

    def rollback(self, chain: list[Path], shape: str) -> str:
        """Restart from the checkpoint: the container ended at once (what it ran is to be
        dropped), its upper layer emptied, the checkpoint's layers stacked read-only over
        the image's, a new boot. A live rollback would have to swap the root under
        running processes: not done."""
        started = time.monotonic()
        self.stop(0.0)
        for directory in (self.upper, self.work):
            system.remove_tree(directory)
        self.checkpoint_layers = [checkpoint / UPPER for checkpoint in chain]
        stopped = time.monotonic()
        self.start()
        return f"stopped {stopped - started:.2f}s, started {time.monotonic() - stopped:.2f}s"

    def _mount_sized_layer(self, mib: int) -> None:
        """The container's own layer (overlay upper and work) on a filesystem of ``mib``:
        a sparse file holding ext4, mounted by loop. What the container writes to its
        root past that gets ENOSPC; the host loses at most ``mib`` of its disk."""
        self.layer.mkdir(parents=True, exist_ok=True)
        sized = self.ctx.runtime_dir / "disk.img"
        with open(sized, "wb") as sparse:
            sparse.truncate(mib * 2**20)
        system.run([system.require_tool("mkfs.ext4"), "-q", "-F", "-m", "0",
                    "-E", "lazy_itable_init=1,lazy_journal_init=1", str(sized)])  # fmt: skip
        self.ctx.record.add_mount(self.layer)
        system.run(["mount", "-o", "loop,nosuid,nodev", str(sized), str(self.layer)])
        self.upper, self.work = self.layer / "upper", self.layer / "work"

    def _map_shares(self) -> None:
        for tag, source, _, read_only in self.shares():
            if read_only:
                continue
            target = self.mapped_share(tag)
            target.mkdir(parents=True, exist_ok=True)
            self.ctx.record.add_mount(target)
            idmap.mount_idmapped(source, target, *self.share_owners(source).container_mount())

    def _attach_veth(self, timeout: float = 10.0) -> None:
        """Put the host side of the container's veth on the lab bridge once nspawn made it."""
        ifname = derive.veth_host_name(self.ctx.spec.name)
        bridge = self.ctx.lab.network.bridge

        def attached(last_try: bool) -> bool | None:
            try:
                self.ctx.lab.ip_batch(f"link set {ifname} master {bridge} up")
                return True
            except system.HostCommandError:
                if last_try or not self.is_up():
                    raise
                return None

        retry_until(attached, timeout, 0.002)

    def stop(self, timeout: float, discard: bool = False) -> None:
        # A container's shutdown takes a fraction of a second: discarded or not, it is
        # what ends it (its processes get SIGTERM, as anywhere).
        if self.is_up():
            # nspawn turns SIGTERM into the --kill-signal for the container's init.
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
        self.finish(self.cgroup, timeout)
        self.ctx.lab.unguard_port(derive.veth_host_name(self.ctx.spec.name))
        mapped = [self.mapped_share(tag) for tag, _, _, ro in self.shares() if not ro]
        for mount in (self.root, *mapped, self.layer):
            if system.is_mounted(mount):
                system.run(["umount", str(mount)])
            self.ctx.record.drop_mount(mount)
