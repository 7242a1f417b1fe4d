"""Building images: a base of each flavour, bootstrapped by ``mmdebstrap``, and layers over
it for workspaces that want more packages.

``image.obtain`` decides when (under the entry's lock, once across processes); here is
how. The tree is built under a temporary name and renamed into place, so a crash never
leaves a half image that looks done.

A layer: apt installs the added packages into an overlay over the base, and the overlay's
upper directory is kept. Workspaces boot the layer over the base (overlayfs lower
directories). A new package set then costs an apt install (seconds) instead of a bootstrap
(half a minute). What goes into the tree is the guest's (``wsfixture.guest.osconfig``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsfixture.errors import CleanupError, ImageBuildError
from wsfixture.guest import osconfig
from wsfixture.host import inroot, ledger, settings, system
from wsfixture.image import setid, store
from wsfixture.image.recipe import (
    VM_DISK_NAME,
    Image,
    ImageRecipe,
    file_digest,
)
from wsfixture.model import share_ids

EXT4_SIZE = "3G"  # sparse; the per-VM qcow2 overlay and growfs take it to the spec's size
# Room an image needs in the cache while it is built, a little over the most seen here: a
# bookworm VM base 1.4 GiB (its tree and its ext4 disk), a layer 0.4 GiB.
BASE_ROOM = 2 * settings.GIB
LAYER_ROOM = 1 * settings.GIB

Progress = Callable[[str], None]


def stderr_progress(line: str) -> None:
    print(f"wsfixture: {line}", file=sys.stderr, flush=True)


# What systemd-nspawn says while it tears a throwaway tree down: nothing about the failure.
NSPAWN_NOISE = re.compile(r"Attempted to remove disk file system|and we can't allow that")


@dataclass
class _Build:
    """One image build in progress: its staging directory, the cgroup every process of
    the build runs in, and the ledger record that lets ``gc`` reap a killed build (its
    processes, a layer's overlay mount, the staging directory)."""

    image: Image
    staging: Path
    cgroup: Path
    record: ledger.Record
    progress: Progress
    sources: Mapping[str, Path] = field(default_factory=dict)
    began: float = field(default_factory=time.monotonic)  # the whole build's: base and layers
    started: float = field(default_factory=time.monotonic)  # this image's

    def stamp(self) -> str:
        """The time since the whole build began: one clock for a base and its layer."""
        return f"[{time.monotonic() - self.began:5.1f}s]"

    @property
    def log(self) -> Path:
        return self.staging / "build.log"

    def fail(self, reason: str) -> ImageBuildError:
        """The error for a failed step: apt's own error line first, then the log's tail
        without systemd-nspawn's teardown noise."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = [line for line in text.splitlines() if not NSPAWN_NOISE.search(line)]
        errors = [line for line in lines if line.startswith("E: ")]
        if errors:
            reason = f"{reason}: {errors[0]}"
        return ImageBuildError(self.image.recipe.label, reason, "\n".join(lines[-30:]))

    def run(self, argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
        """``argv`` in the build's cgroup, its output in the log, apt's steps in the
        progress (condensed: a package's download, unpacking and setting up);
        ImageBuildError if it fails."""
        with open(self.log, "ab") as output:
            process = subprocess.Popen(
                system.in_cgroup(self.cgroup, argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
            assert process.stdout is not None
            try:
                for raw in process.stdout:
                    output.write(raw)
                    line = raw.decode(errors="replace").strip()
                    if line.startswith(APT_STEPS):
                        self.progress(f"{self.stamp()} {what}: {line[:100]}")
            finally:
                rc = finish(process)
        if rc != 0:
            raise self.fail(f"{what} failed (exit {rc})")


# The lines of apt's output that say where it is.
APT_STEPS = ("Get:", "Unpacking ", "Setting up ")


def finish(process: subprocess.Popen[Any]) -> int:
    """Wait for a build step; interrupted, end it with SIGTERM and wait for it, so that
    systemd-nspawn reaps its own payload (killed outright, it would leave its children to a
    PID 1 that may reap them late, and their cgroup busy until then)."""
    try:
        return process.wait()
    except BaseException:
        system.end_process(process, 15.0)
        raise


def build_image(
    image: Image, progress: Progress, sources: Mapping[str, Path], began: float
) -> None:
    """Build ``image`` (its base is there) into its staging directory and rename it into
    place; nothing of a failed build stays. The caller holds its lock (``obtain``)."""
    staging = store.staging_path(image.dir)
    info = ledger.BuildInfo(image.recipe.key, str(staging))
    cgroup = settings.current().cgroup_root / f"image-build-{os.getpid()}-{time.monotonic_ns()}"
    # No process, mount, cgroup or staging directory outlives a failed build.
    with store.staged(image.dir, f"build-{image.dir.name}-{os.getpid()}", info) as record:
        record.add_cgroup(cgroup)
        staging.mkdir(parents=True)
        cgroup.mkdir(parents=True)
        build = _Build(image, staging, cgroup, record, progress, sources, began)
        if image.recipe.base is None:
            _bootstrap(build)
        else:
            _install_layer(build)
        recipe = dataclasses.asdict(image.recipe)
        (staging / store.RECIPE).write_text(json.dumps(recipe, indent=1))
        (staging / store.READY).write_text(f"{time.time()}\n")
    if failures := ledger.release(record):  # the cgroup; the staging dir is the image now
        raise CleanupError(failures)
    progress(ready_line(image.recipe, time.monotonic() - build.started, build.stamp()))


def ready_line(recipe: ImageRecipe, seconds: float, stamp: str) -> str:
    """What a finished build says: what it made, in its own time (a layer's is not its
    base's too), on the whole build's clock."""
    what = "base image" if recipe.base is None else f"layer ({', '.join(recipe.adds)})"
    return f"{stamp} {what} {recipe.key} ready in {seconds:.1f}s"


def _bootstrap(build: _Build) -> None:
    image, staging = build.image, build.staging
    build.progress(
        f"{build.stamp()} building base image {image.recipe.key} "
        f"({len(image.recipe.packages)} packages)"
    )
    argv = [
        "mmdebstrap",
        "--variant=apt",
        "--mode=root",
        f"--include={','.join(image.recipe.packages)}",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        image.recipe.suite,
        str(staging / "root"),
    ]
    if image.recipe.flavour == "vm":
        argv.insert(-2, f"--essential-hook={osconfig.VM_ESSENTIAL_HOOK}")
    # An explicit mirror for hosts whose apt reaches Debian through another address.
    if mirror := settings.current().mirror:
        argv.append(mirror)
    with open(build.log, "w") as log_file:
        proc = subprocess.Popen(
            system.in_cgroup(build.cgroup, argv),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log_file.write(line)
                if line.startswith("I: "):
                    build.progress(f"{build.stamp()} {line[3:].strip()}")
        finally:
            rc = finish(proc)
    if rc != 0:
        raise build.fail(f"mmdebstrap exited {rc}")
    osconfig.customise(staging / "root", image.recipe.flavour)
    if image.recipe.flavour == "vm":
        build.progress(f"{build.stamp()} building the VM root disk (ext4)")
        _make_ext4(build, staging / "root", ())
        setid.save(setid.strip(staging / "root"), staging)
    else:
        osconfig.shift_ownership(staging / "root")  # owned by the containers' root
    drop_device_nodes(staging / "root")


def drop_device_nodes(tree: Path) -> None:
    """Remove the device nodes the bootstrap made (``dev/console``, ``dev/null``, ... 0666):
    on the host they would open real devices for whoever reaches them, and no workspace
    uses them (nspawn mounts a /dev of its own, a VM's initrd devtmpfs; a VM's disk was
    made before, with them). Overlay whiteouts (0:0) are an upper layer's deletions: kept."""
    for path in tree.rglob("*"):
        st = path.lstat()
        if (stat.S_ISCHR(st.st_mode) and st.st_rdev != 0) or stat.S_ISBLK(st.st_mode):
            path.unlink()


# Run by apt inside the overlay. No daemon starts during the install (policy-rc.d), and the
# package lists go afterwards, as mmdebstrap leaves the base.
LAYER_SCRIPT = """\
set -e
{prelude}apt-get {options}update -q
apt-get {options}install -y -q --no-install-recommends {packages}
apt-get clean
rm -rf /var/lib/apt/lists/*
"""
LAYER_SOURCES = "/run/wsfixture-sources.list"  # inside the build's tree; gone with /run
DPKG_EXCLUDES = "/etc/dpkg/dpkg.cfg.d/99mmdebstrap"  # the base's path-excludes (docs, man)


def layer_script(
    packages: Sequence[str], suite: str, mirror: str | None, docs: bool = False
) -> str:
    """The layer's apt run. With a mirror (WSFIXTURE_MIRROR: a URL, or a whole ``deb``
    line as mmdebstrap takes it), apt uses it for this layer too, whatever mirror the base
    was built from, and leaves the image's own sources as they are. ``docs``: the base's
    dpkg excludes go first (this layer's packages, and the workspace's later installs,
    come with their docs, man pages and locales)."""
    options = ""
    prelude = f"rm -f {DPKG_EXCLUDES}\n" if docs else ""
    if mirror:
        line = mirror if mirror.startswith("deb ") else f"deb {mirror} {suite} main"
        prelude += f"echo {shlex.quote(line)} > {LAYER_SOURCES}\n"
        options = f"-o Dir::Etc::SourceList={LAYER_SOURCES} -o Dir::Etc::SourceParts=/dev/null "
    quoted = " ".join(shlex.quote(p) for p in packages)
    return LAYER_SCRIPT.format(prelude=prelude, options=options, packages=quoted)


POLICY_RC_D = "usr/sbin/policy-rc.d"


def _install_layer(build: _Build) -> None:
    """apt-get install the added packages into an overlay over the base, put the files in,
    run the setup lines; keep the overlay's upper directory."""
    image, staging = build.image, build.staging
    assert image.base is not None
    build.progress(
        f"{build.stamp()} building layer {image.recipe.key}: {', '.join(image.recipe.adds)} over "
        f"{image.base.dir.name}"
    )
    layer, work, merged = staging / "layer", staging / "work", staging / "merged"
    for directory in (layer, work, merged):
        directory.mkdir()
    # A container image belongs to the containers' root (share_ids.CONTAINER_UID_BASE): apt
    # runs in the same user namespace, and what the host writes here is shifted likewise.
    shift = 0 if image.recipe.flavour == "vm" else share_ids.CONTAINER_UID_BASE
    os.chown(layer, shift, shift)  # the merged tree's root directory
    (staging / store.BASE_READY).write_text(store.ready_stamp(image.base.dir))
    lower = ":".join(str(path) for path in image.base.layers)
    build.record.add_mount(merged)
    system.run(["mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={lower},upperdir={layer},workdir={work}", str(merged)])  # fmt: skip
    osconfig.drop_in(merged / POLICY_RC_D, "#!/bin/sh\nexit 101\n")
    (merged / POLICY_RC_D).chmod(0o755)
    os.chown(merged / POLICY_RC_D, shift, shift)
    if added := image.recipe.added:
        script = layer_script(
            added, image.recipe.suite, settings.current().mirror, image.recipe.docs
        )
        _in_tree(build, merged, shift, script, f"installing {', '.join(added)}")
    _put_files(build, merged, shift)
    if image.recipe.setup:
        _run_setup(build, merged, shift)
    # nspawn put the host's resolv.conf there for apt and the setup lines (and a file may
    # have replaced it); the workspace uses resolved's stub, whatever ran.
    resolv = merged / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to(osconfig.STUB_RESOLV)
    os.lchown(resolv, shift, shift)
    (merged / POLICY_RC_D).unlink()
    if image.recipe.flavour == "vm":
        build.progress(f"{build.stamp()} building the VM root disk (ext4)")
        _make_ext4(build, merged, _kept_below(Image(image.recipe, staging)))
    system.run(["umount", str(merged)])
    build.record.drop_mount(merged)
    system.remove_tree(work)
    merged.rmdir()
    drop_device_nodes(layer)
    if image.recipe.flavour == "vm":
        setid.save(setid.strip(layer), staging)


def _kept_below(staged: Image) -> list[setid.Privileged]:
    """The privileged files of the layers below ``staged`` that are still theirs in its
    merged tree (not replaced or deleted above): their bits go back into its disk."""
    assert staged.base is not None
    kept = []
    for layer in staged.base.layers:
        for entry in setid.load(layer.parent):
            try:
                if staged.path(entry.path) == layer / entry.path:
                    kept.append(entry)
            except FileNotFoundError:
                pass  # deleted above
    return kept


def _in_tree(build: _Build, root: Path, shift: int, script: str, what: str) -> None:
    """``script`` run by sh as root in ``root`` (systemd-nspawn, the host's network, the
    containers' user namespace for a container image)."""
    nspawn = [
        "systemd-nspawn", "--quiet", f"--directory={root}", "--register=no", "--keep-unit",
        "--as-pid2", "--resolv-conf=replace-host", "--timezone=off", "--link-journal=no",
        "--setenv=DEBIAN_FRONTEND=noninteractive",
        *(osconfig.NSPAWN_USER_NAMESPACE if shift else ()), "/bin/sh", "-c", script,
    ]  # fmt: skip
    build.run(nspawn, what, {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"})


def _put_files(build: _Build, root: Path, shift: int) -> None:
    """The recipe's files, root's and 0644, each checked against the digest in the key: a
    file changed since the key was made would give an image the key does not describe."""
    for target, digest in build.image.recipe.files:
        source = build.sources.get(target)
        if source is None or file_digest(source) != digest:
            raise ImageBuildError(
                build.image.recipe.label,
                f"the file for {target} ({source}) changed while the image was being built",
            )
        # Resolved inside the tree: its links (/var/run -> /run) stay in it.
        inroot.write(root, target, source.read_bytes(), 0o644, shift, shift, parents_owner=shift)


SETUP_FAILED = re.compile(r"^wsfixture-setup: line (\d+) exited (\d+)$", re.MULTILINE)


def _run_setup(build: _Build, root: Path, shift: int) -> None:
    """The setup lines in order, each by `sh -e`; the first to fail is named, with its exit
    status and the tail of its output."""
    lines = build.image.recipe.setup
    steps = "".join(
        f"echo {shlex.quote(f'wsfixture-setup: line {n}: {line}')}\n"
        f"sh -ec {shlex.quote(line)} || {{ rc=$?; printf '\\nwsfixture-setup: line {n} "
        f'exited %d\\n\' "$rc"; exit 1; }}\n'
        for n, line in enumerate(lines, 1)
    )
    try:
        _in_tree(build, root, shift, steps, "setup")
    except ImageBuildError as exc:
        text = build.log.read_text(errors="replace")
        failed = SETUP_FAILED.search(text)
        if failed is None:
            raise
        n, rc = int(failed[1]), int(failed[2])
        start = text.rfind(f"wsfixture-setup: line {n}: ")
        # (its status is said on a line of its own: the output may not end with a newline)
        output = text[start : failed.start()].rstrip("\n").splitlines()[1:]
        raise ImageBuildError(
            build.image.recipe.label,
            f"setup line {n} exited {rc}: {lines[n - 1]}",
            "\n".join(output[-20:]),
        ) from exc


def _make_ext4(build: _Build, root: Path, give_back: Sequence[setid.Privileged]) -> None:
    """The VM root disk of ``root``, with ``give_back``'s bits (stripped from the trees
    below) in it."""
    system.require_tool("mkfs.ext4")
    target = build.staging / VM_DISK_NAME
    build.run(
        ["mkfs.ext4", "-q", "-F", "-L", "wsroot", "-d", str(root), str(target), EXT4_SIZE],
        "mkfs.ext4",
    )
    setid.give_back(target, give_back, system.require_tool("debugfs"))
    target.chmod(0o444)  # the cached base is never written; overlays take the writes
