"""VM templates on disk: a booted VM saved where it waits for its identity
(``wsfixture.guest.restore``), cached beside the images, one per VM shape.

A template directory (``<cache>/templates/<key>/``) holds:
- ``disk``, ``vmlinuz``, ``initrd``: hard links to the image's files, so that an image
  rebuilt or pruned under a template never changes what the template stands on;
- ``frozen.qcow2``: the root disk as the template left it (over ``disk``, by a relative
  path, so the directory can be renamed into place); clones get an overlay over it;
- ``seed.tar``: the template's fw_cfg seed (a clone declares the same devices);
- ``ram``: the guest's memory, a sparse file of the pages it wrote (copied from the memfd
  QEMU ran the template on);
- ``state``: QEMU's migration stream of everything else (devices, firmware);
- ``template.json``: what it was made from, the state's size and digest, the memory's
  digest. Written last: a directory without it is not a template.

Made as every cache entry is (``image.store``); restores hold the entry's lock shared
while QEMU opens the files, so a template is never replaced under a restore that is
reading it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsfixture.guest import restore
from wsfixture.host import ledger, system, virt
from wsfixture.image import store
from wsfixture.image.recipe import Image, file_digest
from wsfixture.model.config import Config, WorkspaceSpec
from wsfixture.model.shares import STANDARD_SHARE_TABLE

# The procedure's own version (file layout, how the VM is saved); the guest side's is the
# digest of wsfixture.guest.restore, in every key.
# 3: the guest booted with its key's machine-id (2 used its staging directory's, which left
# every clone's journal link dangling)
# 4: a clone's clock set by the shell and `date` (no Python started in the template)
# 5: the first VM of a shape boots as its template and goes on; the agent opens its port
# once udev has settled
TEMPLATE_VERSION = "5"
META = "template.json"
QEMU_STATE_MAGIC = b"QEVM"
RAM_BLOCK = 2**16  # what ``ram_digest`` reads at a time, and skips when all zeros
# Room a template needs beside its memory file (as large as the shape's memory): its state
# (up to 200 MiB seen), the frozen overlay and the console log.
TEMPLATE_ROOM_MIB = 256


# Spare PCIe root ports of a restorable VM, for the shares hot-plugged after a restore
# (vhost-user-fs cannot be migrated in QEMU 7.2): a VM with more shares boots cold.
SPARE_ROOT_PORTS = 8


def restore_blocker(snapshot_mode: str, machine: str, vsock: bool, shares: int) -> str | None:
    """Why this VM boots cold instead of restoring a template; None if it can restore."""
    if snapshot_mode == "off":
        return "snapshot = 'off'"
    if machine != "q35":
        return f"machine {machine!r} has no PCIe slots to hot-plug shares into (q35 has)"
    if vsock:
        return "a vsock device's CID is fixed at boot"
    if shares > SPARE_ROOT_PORTS:
        return f"{shares} shares, a restored VM takes at most {SPARE_ROOT_PORTS}"
    return None


def spec_restore_blocker(config: Config, spec: WorkspaceSpec) -> str | None:
    """``restore_blocker`` for a VM of ``spec`` on this host: what a start decides by, and
    what ``wsfixture images key`` counts templates by."""
    vsock = spec.vsock != "off" and virt.vsock_available()
    shares = len(STANDARD_SHARE_TABLE) + len(spec.shares)
    return restore_blocker(config.resolve(spec).snapshot, spec.machine, vsock, shares)


@dataclass(frozen=True)
class TemplateShape:
    """Everything a saved VM depends on: a clone must match it exactly."""

    image_key: str
    machine: str
    vcpu: int
    memory: int  # MiB
    disk: int  # MiB: the guest grew its filesystem to it
    accel: str
    share_transport: str
    qemu: str  # QEMU's version line: a migration stream is only read by its own QEMU
    kernel_args: str  # the template's kernel booted with them; its clones run on as it

    @property
    def key(self) -> str:
        parts = [TEMPLATE_VERSION, restore.fingerprint(), dataclasses.asdict(self)]
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.image_key}-{self.machine}-{self.vcpu}c{self.memory}m-{digest}"


@dataclass(frozen=True)
class Template:
    dir: Path

    @property
    def key(self) -> str:
        """The entry's key, also while it is made in its staging directory: the template's
        guest is booted with a machine-id derived from it, which its clones' journal link
        names (``guest.restore``)."""
        return store.entry_key(self.dir)

    @property
    def disk(self) -> Path:
        return self.dir / "disk"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd"

    @property
    def frozen(self) -> Path:
        return self.dir / "frozen.qcow2"

    @property
    def seed(self) -> Path:
        return self.dir / "seed.tar"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def ram(self) -> Path:
        return self.dir / "ram"

    @property
    def meta_path(self) -> Path:
        return self.dir / META

    def meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.meta_path.read_text())
        return data

    def problem(self, shape: TemplateShape, image: Image) -> str | None:
        """Why this template cannot be restored for ``shape`` on ``image``; None if it can.
        Cheap checks only; ``verify_state`` reads the whole state."""
        try:
            meta = self.meta()
        except (OSError, ValueError):
            return "no template yet" if not self.dir.exists() else f"{META} missing or unreadable"
        if meta.get("shape") != dataclasses.asdict(shape):
            return f"made for another shape or QEMU ({meta.get('shape')})"
        if meta.get("image_ready") != store.ready_stamp(image.dir):
            return "its image was rebuilt since"
        missing = [p.name for p in (self.disk, self.kernel, self.initrd, self.frozen, self.seed)
                   if not p.exists()]  # fmt: skip
        if missing:
            return f"missing {', '.join(missing)}"
        try:
            ram = self.ram.stat().st_size
        except OSError as exc:
            return f"ram unreadable: {exc}"
        if ram != shape.memory * 2**20:
            return f"ram is {ram} bytes, not the shape's {shape.memory} MiB"
        try:
            size = self.state.stat().st_size
            with open(self.state, "rb") as stream:
                magic = stream.read(len(QEMU_STATE_MAGIC))
        except OSError as exc:
            return f"state unreadable: {exc}"
        if size != meta.get("state_size"):
            return f"state is {size} bytes, {meta.get('state_size')} were saved (truncated?)"
        if magic != QEMU_STATE_MAGIC:
            return "state does not start like a QEMU migration stream"
        return None

    def verify_state(self) -> str | None:
        """Read the whole state and memory and compare their digests with the saved ones;
        why not, or None. Runs while a clone is loaded, before it is let run."""
        try:
            meta = self.meta()
            if file_digest(self.state) != meta.get("state_sha256"):
                return "state digest differs from the saved one"
            if ram_digest(self.ram) != meta.get("ram_sha256"):
                return "ram digest differs from the saved one"
        except (OSError, ValueError) as exc:
            return f"unreadable: {exc}"  # names the file
        return None


def data_extents(fd: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each stretch of a sparse file that is not a hole."""
    size, offset = os.fstat(fd).st_size, 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end - start
        offset = end


def ram_digest(path: Path) -> str:
    """SHA-256 of a memory file's blocks (``RAM_BLOCK``) that are not all zeros, each after
    its number: the same for the same memory wherever the file keeps a hole or stored
    zeros (a copy may differ in that), and only what the guest wrote is read."""
    digest = hashlib.sha256()
    zero = bytes(RAM_BLOCK)
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0  # blocks below this one are digested
        for start, length in data_extents(fd):
            for block in range(max(start // RAM_BLOCK, done), -(-(start + length) // RAM_BLOCK)):
                data = os.pread(fd, RAM_BLOCK, block * RAM_BLOCK)
                if data != zero[: len(data)]:
                    digest.update(block.to_bytes(8, "little"))
                    digest.update(data)
                done = block + 1
    finally:
        os.close(fd)
    return digest.hexdigest()


def copy_ram(source: int, target: int) -> None:
    """The memory file open as ``source`` into the file ``target`` (open, as long, all
    zeros), its holes left holes: only what the guest wrote is copied."""
    for start, length in data_extents(source):
        os.lseek(target, start, os.SEEK_SET)
        done = 0
        while done < length:
            done += os.sendfile(target, source, start + done, length - done)


# Boots and saves a VM into the staging template it is given, its processes and cgroups
# added to the build's ledger record; returns facts for ``template.json``.
Build = Callable[[Template, ledger.Record], dict[str, Any]]


@contextlib.contextmanager
def restoring(template: Template) -> Iterator[None]:
    """Hold while a clone's QEMU opens the template's files: no rebuild replaces them."""
    with store.locked(store.lock_path(template.dir), shared=True):
        yield
    store.mark_used(template.dir)  # last use, for `wsfixture images --prune`


def invalidate(template: Template) -> None:
    """Remove a template found bad while restoring it; the next use makes it anew."""
    with store.locked(store.lock_path(template.dir)):
        template.meta_path.unlink(missing_ok=True)  # no longer looks done
        system.remove_tree(template.dir)


def build_template(template: Template, shape: TemplateShape, image: Image, build: Build) -> None:
    """Make ``template`` in its staging directory by ``build`` and rename it into place.
    The caller holds its lock (``obtain``)."""
    staging = store.staging_path(template.dir)
    info = ledger.BuildInfo(template.key, str(staging))
    started = time.monotonic()
    with store.staged(template.dir, f"template-{template.key}-{os.getpid()}", info) as record:
        system.private_dir(staging)
        kernel, initrd = image.kernel()
        building = Template(staging)
        for source, link in ((image.disk, building.disk), (kernel, building.kernel),
                             (initrd, building.initrd)):  # fmt: skip
            _link_or_copy(source, link)
        facts = build(building, record)
        meta = {
            "shape": dataclasses.asdict(shape),
            "image": image.recipe.label,
            "image_ready": store.ready_stamp(image.dir),
            "state_size": building.state.stat().st_size,
            "state_sha256": file_digest(building.state),
            "ram_sha256": ram_digest(building.ram),
            "made": time.time(),
            "build_seconds": round(time.monotonic() - started, 2),
            **facts,
        }
        system.write_atomic(building.meta_path, json.dumps(meta, indent=1))
    record.forget()  # its processes and cgroup ended with the build


def _link_or_copy(source: Path, link: Path) -> None:
    try:
        os.link(source, link)
    except OSError:  # another filesystem
        system.run(["cp", "--sparse=always", str(source), str(link)])


# -- the cache's view: listing and pruning -------------------------------------------------
