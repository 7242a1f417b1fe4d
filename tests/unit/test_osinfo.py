"""testinfra's system information, read from an image's tree: os-release parsed as
testinfra parses it, its links followed inside the image, never on the host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wsfixture.image.osinfo import parse_os_release, system_info
from wsfixture.image.recipe import Image, ImageRecipe

TRIXIE = """PRETTY_NAME="Debian GNU/Linux 13 (trixie)"
NAME="Debian GNU/Linux"
VERSION_ID="13"
VERSION="13 (trixie)"
VERSION_CODENAME=trixie
ID=debian
"""


def test_os_release_as_testinfra_reads_it() -> None:
    assert parse_os_release(TRIXIE) == {
        "release": "13",
        "codename": "trixie",
        "distribution": "debian",
    }
    assert parse_os_release("ID='arch'\n") == {"distribution": "arch", "release": "rolling"}
    assert parse_os_release("NAME=x\n") == {}


@pytest.fixture
def layered(tmp_path: Path) -> tuple[Image, Path, Path]:
    """A layer (curl) over its base, both with an etc and a usr/lib."""
    recipe = ImageRecipe.for_packages(["curl"])
    assert recipe.base is not None
    base_root, layer = tmp_path / recipe.base.key / "root", tmp_path / recipe.key / "layer"
    for tree in (base_root, layer):
        (tree / "etc").mkdir(parents=True)
        (tree / "usr/lib").mkdir(parents=True)
    return Image(recipe, tmp_path / recipe.key), base_root, layer


def test_the_link_debian_ships_is_followed_in_the_image(layered: tuple[Image, Path, Path]) -> None:
    image, base_root, layer = layered
    (base_root / "usr/lib/os-release").write_text(TRIXIE)
    os.symlink("../usr/lib/os-release", base_root / "etc/os-release")
    assert image.read_text("etc/os-release") == TRIXIE
    (layer / "usr/lib/os-release").write_text("ID=debian\nVERSION_ID=99\n")  # the layer's wins
    info = system_info(image)
    assert info == {"type": "linux", "distribution": "debian", "codename": None,
                    "release": "99", "arch": os.uname().machine}  # fmt: skip


def test_an_absolute_link_is_the_images_root_not_the_hosts(
    layered: tuple[Image, Path, Path],
) -> None:
    image, base_root, _ = layered
    (base_root / "usr/lib/os-release").write_text("ID=inside\n")
    os.symlink("/usr/lib/os-release", base_root / "etc/os-release")
    assert image.read_text("etc/os-release") == "ID=inside\n"
    os.remove(base_root / "etc/os-release")
    os.symlink("../../../../../../etc/os-release", base_root / "etc/os-release")
    with pytest.raises(FileNotFoundError, match="more than"):
        image.read_text("etc/os-release")  # /etc/os-release again: a loop, not the host's


def test_a_link_the_image_holds_never_reads_the_host(
    layered: tuple[Image, Path, Path], tmp_path: Path
) -> None:
    """An imported image whose ``etc/passwd`` links to a host file, or whose whole ``etc``
    does (a layer's ``etc`` a link over the base's directory): what the seed of a VM and
    the account check read is the image's, never the host's. Control: the same links,
    followed by the host as ``Path.read_text`` does, read the secret."""
    image, base_root, layer = layered
    secret = tmp_path / "host-secret"
    secret.write_text("host only\n")
    (base_root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.symlink(secret, layer / "etc/passwd")
    assert (layer / "etc/passwd").read_text() == "host only\n"  # the control
    with pytest.raises(FileNotFoundError):
        image.read_text("etc/passwd")  # the link is the image's: its target is not there
    (layer / "etc/passwd").unlink()
    assert image.read_text("etc/passwd") == "root:x:0:0::/root:/bin/sh\n"
    os.rename(layer / "etc", layer / "etc.real")
    (tmp_path / "host-etc").mkdir()
    (tmp_path / "host-etc" / "passwd").write_text("host only\n")
    os.symlink(tmp_path / "host-etc", layer / "etc")
    assert (layer / "etc" / "passwd").read_text() == "host only\n"  # the control
    with pytest.raises(FileNotFoundError):
        image.read_text("etc/passwd")


def test_no_os_release_leaves_it_to_testinfra(layered: tuple[Image, Path, Path]) -> None:
    image, _, _ = layered
    assert system_info(image) is None
