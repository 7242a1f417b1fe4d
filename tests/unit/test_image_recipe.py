"""Image recipes and layer lookup: pure logic, no image is built."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from wsfixture.guest.osconfig import BASE_PACKAGES, VM_PACKAGES
from wsfixture.image.recipe import Image, ImageRecipe
from wsfixture.model.spec import DEFAULT_RELEASE, RELEASES


def test_no_extra_packages_is_the_base() -> None:
    for flavour in ("container", "vm"):
        recipe = ImageRecipe.for_packages((), flavour)
        assert recipe.base is None
        assert recipe == ImageRecipe.base_of(flavour)
        assert recipe.added == ()
    assert ImageRecipe.for_packages(["openssh-server"]).base is None  # already in the base
    assert set(ImageRecipe.base_of("vm").packages) == {*BASE_PACKAGES, *VM_PACKAGES}


def test_extra_packages_make_a_layer_over_the_base() -> None:
    recipe = ImageRecipe.for_packages(["git", "curl", "git"], "vm")
    assert recipe.base == ImageRecipe.base_of("vm")
    assert recipe.added == ("curl", "git")
    assert set(recipe.packages) == {*recipe.base.packages, "curl", "git"}
    assert ImageRecipe.for_packages(["curl", "git"], "vm").key == recipe.key  # order-free
    assert recipe.key != ImageRecipe.for_packages(["curl"], "vm").key
    assert recipe.key != ImageRecipe.for_packages(["curl", "git"], "container").key
    assert recipe.key.startswith(f"{DEFAULT_RELEASE}-vm-")


def test_each_release_has_its_own_base_and_layers() -> None:
    layers = {release: ImageRecipe.for_packages(["curl"], suite=release) for release in RELEASES}
    for release, layer in layers.items():
        assert layer.suite == release
        assert layer.base is not None
        assert layer.base == ImageRecipe.base_of(suite=release)
        assert layer.key.startswith(f"{release}-container-")
    assert len({layer.key for layer in layers.values()}) == len(RELEASES)
    assert len({layer.base.key for layer in layers.values() if layer.base}) == len(RELEASES)


def test_paths_resolve_through_layers_and_whiteouts(tmp_path: Path) -> None:
    recipe = ImageRecipe.for_packages(["curl"])
    image = Image(recipe, tmp_path / recipe.key)
    assert recipe.base is not None
    base_root = tmp_path / recipe.base.key / "root"
    layer = tmp_path / recipe.key / "layer"
    assert image.layers == [layer, base_root]
    for tree in (base_root, layer):
        (tree / "etc").mkdir(parents=True)
    (base_root / "etc/passwd").write_text("base")
    (base_root / "etc/gone").write_text("deleted by the layer")
    (base_root / "etc/motd").write_text("base")
    (layer / "etc/motd").write_text("layer")
    os.mknod(layer / "etc/gone", 0o600 | 0o020000, os.makedev(0, 0))  # overlayfs whiteout
    try:
        assert image.path("etc/passwd") == base_root / "etc/passwd"
        assert image.path("etc/motd") == layer / "etc/motd"
        assert not image.has("etc/gone")
        with pytest.raises(FileNotFoundError, match="etc/gone"):
            image.path("etc/gone")
        assert not image.has("etc/nothing")
    finally:
        (layer / "etc/gone").unlink()  # no device node stays in pytest's kept temp dirs


def test_a_layer_over_a_rebuilt_base_is_not_ready(tmp_path: Path) -> None:
    recipe = ImageRecipe.for_packages(["curl"])
    assert recipe.base is not None
    layer = Image(recipe, tmp_path / recipe.key)
    base_dir, layer_dir = tmp_path / recipe.base.key, tmp_path / recipe.key
    for directory in (base_dir, layer_dir):
        directory.mkdir()
        (directory / "ready").write_text("1700000000.0\n")
    assert not layer.ready, "no record of the base it was built on"
    (layer_dir / "base-ready").write_text("1700000000.0\n")
    assert layer.ready
    (base_dir / "ready").write_text("1800000000.0\n")  # the base was built again
    assert not layer.ready


@pytest.mark.parametrize(
    ("module", "constant", "flavours"),
    [
        ("osconfig", "SSHD_CONFIG", ("container", "vm")),
        ("osconfig", "MASKED_UNITS", ("container", "vm")),
        ("osconfig", "SSHD_PAM_DROPPED", ("container", "vm")),
        ("osconfig", "CONTAINER_MASKED_GENERATORS", ("container",)),
        ("osconfig", "VM_ESSENTIAL_HOOK", ("vm",)),
        ("seed", "SEED_SCRIPT", ("vm",)),
        ("seed", "SEED_UNIT", ("vm",)),
    ],
)
def test_a_changed_guest_constant_makes_new_keys_of_its_flavours_only(
    module: str, constant: str, flavours: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is written into a guest is in the keys of the images it is written into (a
    layer's too, through its base's), and in no other: a VM's seed builds no container."""
    from wsfixture.guest import osconfig, seed

    target = {"osconfig": osconfig, "seed": seed}[module]

    def keys() -> dict[str, tuple[str, str]]:
        return {flavour: (ImageRecipe.base_of(flavour).key,
                          ImageRecipe.for_packages(["git"], flavour).key)
                for flavour in ("container", "vm")}  # fmt: skip

    before = keys()
    value = getattr(target, constant)
    monkeypatch.setattr(
        target, constant, (*value, "x") if isinstance(value, tuple) else value + "#"
    )
    after = keys()
    for flavour in ("container", "vm"):
        moved = [before[flavour][i] != after[flavour][i] for i in (0, 1)]
        assert moved == ([True, True] if flavour in flavours else [False, False]), flavour


def test_the_seed_carries_the_mount_table(tmp_path: Path) -> None:
    import tarfile

    from wsfixture.guest import seed

    staging = tmp_path / "staging"
    (staging / "etc").mkdir(parents=True)
    (staging / "etc/hostname").write_text("box\n")
    table = seed.mount_table([("workspace", "/home/dev/workspace", False), ("keys", "/k", True)],
                             "virtiofs")  # fmt: skip
    assert table == (
        "workspace /home/dev/workspace virtiofs rw,relatime\nkeys /k virtiofs ro,relatime\n"
    )
    assert "trans=virtio" in seed.mount_table([("a", "/a", False)], "9p")
    seed.pack(staging, table, tmp_path / "seed.tar")
    assert not staging.exists()
    with tarfile.open(tmp_path / "seed.tar") as tar:
        names = tar.getnames()
        assert "./etc/hostname" in names
        mounts = tar.extractfile(f"./{seed.MOUNTS_FILE}")
        assert mounts is not None
        assert mounts.read().decode() == table


def test_shifted_file_capabilities_belong_to_the_namespace_root() -> None:
    import struct

    from wsfixture.guest.osconfig import _caps_owned_by

    v2 = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # cap_net_raw, effective
    v3 = _caps_owned_by(v2, 1 << 30)
    assert struct.unpack("<6I", v3) == (0x03000001, 1 << 13, 0, 0, 0, 1 << 30)
    assert struct.unpack("<6I", _caps_owned_by(v3, 5))[-1] == (1 << 30) + 5


def test_a_layer_uses_the_mirror_of_its_build() -> None:
    from wsfixture.image.build import LAYER_SOURCES, layer_script

    plain = layer_script(["curl", "git"], "trixie", None)
    assert "apt-get update -q" in plain
    assert "install -y -q --no-install-recommends curl git" in plain
    assert LAYER_SOURCES not in plain
    mirrored = layer_script(["curl"], "trixie", "http://mirror.example/debian")
    assert f"echo 'deb http://mirror.example/debian trixie main' > {LAYER_SOURCES}" in mirrored
    assert f"apt-get -o Dir::Etc::SourceList={LAYER_SOURCES} " in mirrored
    assert mirrored.index("set -e") < mirrored.index("echo"), "set -e first"
    whole = layer_script(["curl"], "bookworm", "deb [trusted=yes] file:/srv/debian bookworm main")
    assert "echo 'deb [trusted=yes] file:/srv/debian bookworm main' >" in whole


def test_a_finished_build_says_what_it_made_in_its_own_time() -> None:
    """A layer built right after its base says its own time, named as a layer, on the
    clock of the whole build (it read "image ready in 2.7s" 48 s into the build)."""
    from wsfixture.image.build import ready_line

    base = ImageRecipe.base_of("vm")
    layer = ImageRecipe.for_packages(["curl"], "vm")
    assert ready_line(base, 45.25, "[ 45.3s]") == f"[ 45.3s] base image {base.key} ready in 45.2s"
    assert ready_line(layer, 2.7, "[ 48.0s]") == (
        f"[ 48.0s] layer (curl) {layer.key} ready in 2.7s"
    )


# What the guest is given, by version: the image keys' digests of ``osconfig.image_setup``
# and the template keys' of ``restore.template_files`` (and its protocol's names).
GOLDEN_IMAGES = {
    "14": {"container": "5d36dd5a3a736f3c", "vm": "5a0b6bad94d866f6"},
    "15": {"container": "5d36dd5a3a736f3c", "vm": "92fcc17519a346d8"},
}
GOLDEN_TEMPLATES = {"3": "946cfb8f1fa7863f", "4": "63b41640fd032909", "5": "47ea26fea94a3e7d"}


def test_what_the_guest_is_given_is_pinned_by_version() -> None:
    """Every image and template key moves when what is written into the guest moves: a
    move is made on purpose, with a new version and its digests here (every host's cache,
    every shared registry and CI cache misses once), never by a refactoring."""
    from wsfixture.guest import osconfig, restore
    from wsfixture.image.recipe import BUILDER_VERSION
    from wsfixture.image.templates import TEMPLATE_VERSION

    images = {flavour: osconfig.fingerprint(flavour) for flavour in ("container", "vm")}
    assert images == GOLDEN_IMAGES.get(BUILDER_VERSION), (
        "the rendered guest changed: bump BUILDER_VERSION (image.recipe) and add its "
        f"digests here: {images}"
    )
    assert restore.fingerprint() == GOLDEN_TEMPLATES.get(TEMPLATE_VERSION), (
        "the template's guest changed: bump TEMPLATE_VERSION (image.templates) and add its "
        f"digest here: {restore.fingerprint()}"
    )


@pytest.mark.parametrize("module_name", ["osconfig", "seed", "restore"])
def test_a_comment_or_docstring_changes_no_key(module_name: str) -> None:
    """The guest modules' source, with a comment added to every function and every
    docstring changed, loaded as a module of its own: what it gives the guest, and so
    every key, is the same (the keys hashed that source once: a reformat rebuilt every
    image and template on every host)."""
    import ast
    import importlib
    import sys
    import types

    real = importlib.import_module(f"wsfixture.guest.{module_name}")
    tree = ast.parse(Path(real.__file__ or "").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.Module) and ast.get_docstring(node):
            first = node.body[0]
            assert isinstance(first, ast.Expr)
            first.value = ast.Constant("an edited docstring")
    edited = "\n".join(
        f"{line}  # an added comment" if line.rstrip().endswith(":") and "def " in line
        else line for line in ast.unparse(tree).splitlines()
    )  # fmt: skip
    twin = types.ModuleType(real.__name__)
    twin.__dict__["__file__"] = real.__file__
    saved = sys.modules[real.__name__]
    try:
        sys.modules[real.__name__] = twin  # its own functions see its own globals
        exec(compile(edited, f"<edited {module_name}>", "exec"), twin.__dict__)
    finally:
        sys.modules[real.__name__] = saved
    assert edited != Path(real.__file__ or "").read_text()
    if module_name == "restore":
        assert twin.fingerprint() == real.fingerprint()
    elif module_name == "osconfig":
        for flavour in ("container", "vm"):
            assert twin.fingerprint(flavour) == real.fingerprint(flavour)
    else:  # seed: what the image gets of it is in osconfig's files
        assert (twin.SEED_SCRIPT, twin.SEED_UNIT, twin.SHARES_UNIT) == (
            real.SEED_SCRIPT,
            real.SEED_UNIT,
            real.SHARES_UNIT,
        )


def test_docs_lets_a_layer_s_packages_keep_their_docs_and_is_in_its_key_only_then() -> None:
    """The base's dpkg excludes (docs, man pages, locales) are inherited by every layer:
    ``docs = true`` removes them first in its layer, and only such a layer's key moves."""
    from wsfixture.image.build import DPKG_EXCLUDES, layer_script

    plain = ImageRecipe.for_packages(["man-db"])
    with_docs = ImageRecipe.for_packages(["man-db"], docs=True)
    assert plain.key != with_docs.key
    assert ImageRecipe.for_packages(["man-db"], docs=False).key == plain.key
    assert ImageRecipe.from_dict(dataclasses.asdict(with_docs)) == with_docs
    script = layer_script(["man-db"], "trixie", None, docs=True)
    assert script.startswith(f"set -e\nrm -f {DPKG_EXCLUDES}\n")
    assert DPKG_EXCLUDES not in layer_script(["man-db"], "trixie", None)
