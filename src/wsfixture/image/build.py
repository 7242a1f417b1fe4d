"""Building images: a base of each flavour, bootstrapped by ``mmdebstrap``, and layers over
it for workspaces that want more packages.

A hit costs a stat. A miss builds under a file lock, so many processes (pytest-xdist
workers) asking at once build it once. The tree is built under a temporary name and renamed
into place, so a crash never leaves a half image that looks done.

A layer: apt installs the added packages into an overlay over the base, and the overlay's
upper directory is kept. Workspaces boot the layer over the base (overlayfs lower
directories). A new package set then costs an apt install (seconds) instead of a bootstrap
(half a minute). What goes into the tree is the guest's (``wsfixture.guest.osconfig``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from wsfixture.errors import ImageBuildError
from wsfixture.guest import osconfig
from wsfixture.host import ledger, settings, system
from wsfixture.image.recipe import (
    BASE_STAMP,
    USED_STAMP,
    VM_DISK_NAME,
    Image,
    ImageRecipe,
    image_dir,
)

EXT4_SIZE = "3G"  # sparse; the per-VM qcow2 overlay and growfs take it to the spec's size

Progress = Callable[[str], None]


def _stderr_progress(line: str) -> None:
    print(f"wsfixture: {line}", file=sys.stderr, flush=True)


def ensure_image(
    recipe: ImageRecipe, cache_dir: Path | None = None, progress: Progress | None = None
) -> Image:
    """The cached image for ``recipe`` (and its base), built first if it is not there."""
    if recipe.base is not None:
        ensure_image(recipe.base, cache_dir, progress)
    image = Image(recipe, image_dir(recipe, cache_dir))
    if image.ready:
        image.verify()
    else:
        system.require_root()
        system.require_tool("mmdebstrap" if recipe.base is None else "systemd-nspawn")
        image.dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(image.dir) + ".lock"):
            if not image.ready:  # another process may have built it while we waited
                _build(image, progress or _stderr_progress)
    with contextlib.suppress(OSError):  # last use, for `wsfixture images --prune`
        (image.dir / USED_STAMP).touch()
    return image


def _build(image: Image, progress: Progress) -> None:
    started = time.monotonic()
    staging = image.dir.with_name(f"{image.dir.name}.building-{os.getpid()}")
    system.remove_tree(staging)
    system.remove_tree(image.dir)
    staging.mkdir(parents=True)
    try:
        if image.recipe.base is None:
            _bootstrap(image, staging, progress, started)
        else:
            _install_layer(image, staging, progress)
    except BaseException:
        system.remove_tree(staging)  # also detaches a layer's overlay if it is still up
        raise
    recipe = dataclasses.asdict(image.recipe)
    (staging / "recipe.json").write_text(json.dumps(recipe, indent=1))
    (staging / "ready").write_text(f"{time.time()}\n")
    staging.rename(image.dir)
    progress(f"image ready in {time.monotonic() - started:.1f}s: {image.dir}")


def _bootstrap(image: Image, staging: Path, progress: Progress, started: float) -> None:
    log = staging / "build.log"
    progress(f"building base image {image.recipe.key} ({len(image.recipe.packages)} packages)")
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
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            if line.startswith("I: "):
                progress(f"[{time.monotonic() - started:5.1f}s] {line[3:].strip()}")
        rc = proc.wait()
    if rc != 0:
        raise ImageBuildError(image.recipe.label, f"mmdebstrap exited {rc}", system.tail(log, 30))
    osconfig.customise(staging / "root", image.recipe.flavour)
    if image.recipe.flavour == "vm":
        osconfig.customise_vm(staging / "root")
        progress("building the VM root disk (ext4)")
        _make_ext4(staging / "root", staging / VM_DISK_NAME)


# Run by apt inside the overlay. No daemon starts during the install (policy-rc.d), and the
# package lists go afterwards, as mmdebstrap leaves the base.
LAYER_SCRIPT = """\
set -e
apt-get update -q
apt-get install -y -q --no-install-recommends {packages}
apt-get clean
rm -rf /var/lib/apt/lists/*
"""
POLICY_RC_D = "usr/sbin/policy-rc.d"


def _install_layer(image: Image, staging: Path, progress: Progress) -> None:
    """apt-get install the added packages into an overlay over the base; keep its upper."""
    assert image.base is not None
    added = image.recipe.added
    progress(f"building layer {image.recipe.key}: {' '.join(added)} over {image.base.dir.name}")
    layer, work, merged = staging / "layer", staging / "work", staging / "merged"
    for directory in (layer, work, merged):
        directory.mkdir()
    (staging / BASE_STAMP).write_text((image.base.dir / "ready").read_text())
    lower = ":".join(str(path) for path in image.base.layers)
    system.run(["mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={lower},upperdir={layer},workdir={work}", str(merged)])  # fmt: skip
    try:
        osconfig.drop_in(merged / POLICY_RC_D, "#!/bin/sh\nexit 101\n")
        (merged / POLICY_RC_D).chmod(0o755)
        script = LAYER_SCRIPT.format(packages=" ".join(shlex.quote(p) for p in added))
        _run_in_tree(
            merged,
            script,
            staging / "build.log",
            f"installing {', '.join(added)}",
            image.recipe.label,
        )
        (merged / POLICY_RC_D).unlink()
        # nspawn put the host's resolv.conf there for apt; the workspace uses resolved's.
        resolv = merged / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.symlink_to(osconfig.STUB_RESOLV)
        if image.recipe.flavour == "vm":
            progress("building the VM root disk (ext4)")
            _make_ext4(merged, staging / VM_DISK_NAME)
    finally:
        system.run(["umount", str(merged)])
    system.remove_tree(work)
    merged.rmdir()


def _run_in_tree(tree: Path, script: str, log: Path, what: str, label: str) -> None:
    """Run ``script`` with ``tree`` as its root (systemd-nspawn, the host's network for
    apt), in a cgroup of its own that is emptied afterwards."""
    cgroup = settings.current().cgroup_root / f"image-build-{os.getpid()}-{time.monotonic_ns()}"
    cgroup.mkdir(parents=True)
    argv = [
        "systemd-nspawn", "--quiet", f"--directory={tree}", "--register=no", "--keep-unit",
        "--as-pid2", "--resolv-conf=replace-host", "--timezone=off", "--link-journal=no",
        "--setenv=DEBIAN_FRONTEND=noninteractive", "/bin/sh", "-c", script,
    ]  # fmt: skip
    try:
        with open(log, "ab") as output:
            rc = subprocess.run(
                system.in_cgroup(cgroup, argv),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
                check=False,
            ).returncode
    finally:
        ledger.kill_cgroup(str(cgroup))
    if rc != 0:
        raise ImageBuildError(label, f"{what} failed (exit {rc})", system.tail(log, 30))


def _make_ext4(root: Path, target: Path) -> None:
    system.require_tool("mkfs.ext4")
    system.run(["mkfs.ext4", "-q", "-F", "-L", "wsroot", "-d", str(root), str(target), EXT4_SIZE])
    target.chmod(0o444)  # the cached base is never written; overlays take the writes
