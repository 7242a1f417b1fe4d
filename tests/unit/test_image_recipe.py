"""Image recipes and layer lookup: pure logic, no image is built."""

from __future__ import annotations

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
    ("module", "constant"),
    [
        ("osconfig", "SSHD_CONFIG"),
        ("osconfig", "MASKED_UNITS"),
        ("osconfig", "SSHD_PAM_DROPPED"),
        ("seed", "SEED_SCRIPT"),
        ("seed", "SEED_FW_CFG"),
    ],
)
def test_a_changed_guest_constant_makes_a_new_key(
    module: str, constant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsfixture.guest import osconfig, seed

    target = {"osconfig": osconfig, "seed": seed}[module]
    layer = ImageRecipe.for_packages(["git"])
    before = (ImageRecipe.base_of("vm").key, layer.key)
    value = getattr(target, constant)
    monkeypatch.setattr(
        target, constant, (*value, "x") if isinstance(value, tuple) else value + "#"
    )
    after = (ImageRecipe.base_of("vm").key, layer.key)
    assert before[0] != after[0]
    assert before[1] != after[1]  # a layer's key covers its base's


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
