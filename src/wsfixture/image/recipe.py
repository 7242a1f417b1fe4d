"""What an image is: its recipe (packages, flavour, suite, the base it is layered on) and
its content-addressed key, and the cached image on disk (its layers, kernel, VM disk).

The key hashes the builder version, the suite, the flavour, the packages, the base's key
and the guest configuration's fingerprint (``wsfixture.guest.osconfig``). Pure but for
reading the cache directory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from wsfixture.errors import ImageBuildError
from wsfixture.guest import osconfig
from wsfixture.host import inroot
from wsfixture.image import store
from wsfixture.model.spec import DEFAULT_RELEASE

# The build procedure's own version (mmdebstrap options, the layer script, how
# ``osconfig.customise`` applies the guest configuration); what that configuration writes
# needs no bump: its digest (``osconfig.fingerprint``) is in every key. The digests of this
# version are pinned in tests/unit/test_image_recipe.py, so a key never moves unnoticed.
# 14: no setuid, setgid or capability in a VM image's tree; 15: no udev in a VM's initramfs
BUILDER_VERSION = "15"
VM_DISK_NAME = f"root-v{BUILDER_VERSION}.ext4"
# What a layer with setup lines or files does after them: 2 restores resolved's stub link
# after every step (1 left the host's resolv.conf in setup-only layers). In those layers'
# keys only, so a broken one is never reused and no other image is rebuilt.
LAYER_STEPS_VERSION = 2
MAX_LINKS = 8  # links on the way to a file read from an image (os-release is one away)


@dataclass(frozen=True)
class ImageRecipe:
    """What goes into an image: every package in it, and the base it is layered on (none
    for a base, which is bootstrapped)."""

    packages: tuple[str, ...] = ()
    flavour: str = "container"  # "vm" adds a kernel and an initramfs
    suite: str = DEFAULT_RELEASE  # the Debian release
    base: ImageRecipe | None = None
    # A layer's own setup (wsfixture.model: `setup`, `files`): shell lines run as root after
    # its packages, and files put in before them, each as (guest path, SHA-256 of content).
    setup: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    # The layer's packages come with their docs, man pages and locales (the base's dpkg
    # excludes them, and a layer inherited that).
    docs: bool = False

    @classmethod
    def base_of(cls, flavour: str = "container", suite: str = DEFAULT_RELEASE) -> ImageRecipe:
        wanted = {*osconfig.BASE_PACKAGES, *(osconfig.VM_PACKAGES if flavour == "vm" else ())}
        return cls(tuple(sorted(wanted)), flavour, suite)

    @classmethod
    def for_packages(
        cls,
        extra: Iterable[str],
        flavour: str = "container",
        setup: Iterable[str] = (),
        files: Mapping[str, Path] | None = None,
        suite: str = DEFAULT_RELEASE,
        docs: bool = False,
    ) -> ImageRecipe:
        """The base of ``suite``, or a layer over it with the extra packages, files and setup
        lines. The files are hashed now: their content is in the key."""
        base = cls.base_of(flavour, suite)
        wanted = {*base.packages, *extra}
        digests = tuple(
            sorted((target, file_digest(source)) for target, source in (files or {}).items())
        )
        setup = tuple(setup)
        if len(wanted) == len(base.packages) and not setup and not digests:
            return base
        return cls(tuple(sorted(wanted)), flavour, suite, base, setup, digests, docs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRecipe:
        """The recipe as ``recipe.json`` holds it."""
        base = cls.from_dict(data["base"]) if data.get("base") else None
        files = tuple((str(t), str(d)) for t, d in data.get("files", ()))
        return cls(
            tuple(data["packages"]), data["flavour"], data["suite"], base,
            tuple(data.get("setup", ())), files, bool(data.get("docs", False)),
        )  # fmt: skip

    @property
    def added(self) -> tuple[str, ...]:
        """What the layer installs over its base."""
        below = set(self.base.packages) if self.base is not None else set(self.packages)
        return tuple(p for p in self.packages if p not in below)

    @property
    def label(self) -> str:
        """The image for people: its key, and what it holds beyond its flavour's base."""
        if self.base is None:
            return f"{self.key} (the {self.flavour} base)"
        return f"{self.key} ({', '.join(self.adds)} over the {self.flavour} base)"

    @property
    def adds(self) -> list[str]:
        """What the layer adds, said briefly: packages, files, setup lines."""
        said = list(self.added)
        if self.files:
            said.append(f"{len(self.files)} file{'s' if len(self.files) > 1 else ''}")
        if self.setup:
            said.append(f"{len(self.setup)} setup line{'s' if len(self.setup) > 1 else ''}")
        return said

    @property
    def key(self) -> str:
        parts: list[object] = [
            BUILDER_VERSION,
            osconfig.fingerprint(self.flavour),
            self.suite,
            self.flavour,
            list(self.packages),
        ]
        if self.base is not None:
            parts.append(self.base.key)
        if self.setup or self.files:  # only then: keys of images without them stay as they were
            steps = {"setup": list(self.setup), "files": [list(f) for f in self.files]}
            parts.append({**steps, "steps": LAYER_STEPS_VERSION})
        if self.docs:  # only then, as above
            parts.append({"docs": True})
        digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
        return f"{self.suite}-{self.flavour}-{digest}"


@dataclass(frozen=True)
class Image:
    recipe: ImageRecipe
    dir: Path

    @property
    def root(self) -> Path:
        """A base image's tree (a layered image keeps only its ``layer`` here)."""
        return self.dir / "root"

    @property
    def base(self) -> Image | None:
        if self.recipe.base is None:
            return None
        return Image(self.recipe.base, self.dir.with_name(self.recipe.base.key))

    @property
    def layers(self) -> list[Path]:
        """The image's trees, top first: the overlayfs lower directories, in that order."""
        if self.base is None:
            return [self.root]
        return [self.dir / "layer", *self.base.layers]

    def path(self, relative: str) -> Path:
        """Where ``relative`` is in the merged tree: the topmost layer that has it.
        FileNotFoundError when no layer has it, or a layer deleted it."""
        for layer in self.layers:
            candidate = layer / relative
            if _is_whiteout(candidate):
                break  # deleted by this layer, whatever the ones below hold
            if candidate.is_symlink() or candidate.exists():
                return candidate
        raise FileNotFoundError(errno.ENOENT, "not in the image", f"{self.dir}:/{relative}")

    def read_text(self, relative: str) -> str:
        """The text of ``relative`` in the image's merged tree, read on the host: each
        component looked up in the topmost layer that has it, without following anything
        on the way (``host.inroot.open_literal``), and each link the image holds resolved
        in the merged tree again (an absolute one from the image's root). So a link to a
        host path (``/etc/passwd -> /etc/shadow``, a whole ``etc`` linked away) reads
        nothing of the host. FileNotFoundError if it is not there, deleted, or a link
        loop."""
        path = PurePosixPath(relative)
        for _ in range(MAX_LINKS):
            for depth in range(1, len(path.parts) + 1):
                prefix = "/".join(path.parts[:depth])
                layer, st = self._entry(prefix)
                if stat.S_ISLNK(st.st_mode):
                    fd = inroot.open_literal(layer, prefix, os.O_PATH)
                    try:
                        target = os.readlink("", dir_fd=fd)
                    finally:
                        os.close(fd)
                    base = (
                        "/" if target.startswith("/") else "/" + "/".join(path.parts[: depth - 1])
                    )
                    joined = posixpath.join(base, target, *path.parts[depth:])
                    # From "/", ".." stays at "/": a link cannot lead out of the image.
                    path = PurePosixPath(posixpath.normpath(joined).lstrip("/"))
                    break
            else:
                fd = inroot.open_literal(layer, str(path), os.O_RDONLY)
                with os.fdopen(fd, errors="replace") as handle:
                    return handle.read()
        raise FileNotFoundError(errno.ELOOP, f"more than {MAX_LINKS} links", relative)

    def _entry(self, relative: str) -> tuple[Path, os.stat_result]:
        """The topmost layer that has ``relative`` (no link on the way in that layer), and
        what it is there; FileNotFoundError if none, or a layer deleted it."""
        for layer in self.layers:
            try:
                fd = inroot.open_literal(layer, relative, os.O_PATH)
            except OSError:
                continue  # not in this layer, or a link or a file on the way in it
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                break  # deleted by this layer, whatever the ones below hold
            return layer, st
        raise FileNotFoundError(errno.ENOENT, "not in the image", f"{self.dir}:/{relative}")

    def has(self, relative: str) -> bool:
        try:
            self.path(relative)
        except FileNotFoundError:
            return False
        return True

    @property
    def disk(self) -> Path:
        """The VM root disk (ext4), versioned by the image key: overlays record this path."""
        return self.dir / VM_DISK_NAME

    def kernel(self) -> tuple[Path, Path]:
        """(vmlinuz, initrd) of the image's own kernel, so its modules are inside the guest."""
        kernels = sorted(
            {p.name for layer in self.layers for p in (layer / "boot").glob("vmlinuz-*")}
        )
        version = kernels[-1].removeprefix("vmlinuz-") if kernels else "(none)"
        wanted = (f"boot/vmlinuz-{version}", f"boot/initrd.img-{version}")
        if not all(self.has(path) for path in wanted):
            raise ImageBuildError(
                self.recipe.label, f"no kernel and initrd {version} in {self.dir}/boot"
            )
        return self.path(wanted[0]), self.path(wanted[1])

    @property
    def ready(self) -> bool:
        """Built, and (a layer) over the very base build it was installed on: a layer over
        a rebuilt base would hide the new base's dpkg database behind its own."""
        if not (self.dir / store.READY).exists():
            return False
        if self.base is None:
            return True
        try:
            return (self.dir / store.BASE_READY).read_text() == store.ready_stamp(self.base.dir)
        except OSError:
            return False

    def verify(self) -> None:
        """A cached image must still hold what every boot needs; say what is missing."""
        needed = ["etc/passwd", "usr/lib/systemd/systemd", "usr/sbin/sshd"]
        missing = [path for path in needed if not self.has(path)]
        if self.recipe.flavour == "vm" and not self.disk.exists():
            missing.append(self.disk.name)
        if self.base is not None and not (self.dir / "layer").is_dir():
            missing.append("layer")
        if missing:
            raise ImageBuildError(
                self.recipe.label,
                f"the cached image {self.dir} is corrupt: missing {', '.join(missing)}; "
                f"remove that directory and it is rebuilt on next use",
            )


def file_digest(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def image_dir(recipe: ImageRecipe, cache_dir: Path | None = None) -> Path:
    return store.images_dir(cache_dir) / recipe.key


def _is_whiteout(path: Path) -> bool:
    """overlayfs marks a file deleted by an upper layer with a 0:0 character device."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
