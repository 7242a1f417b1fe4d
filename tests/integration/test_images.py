"""`wsfixture images --prune` on a cache of its own: what goes, what stays, for real mounts;
and a cache on a small filesystem of its own that runs short: what making room removes."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import make_config
from tests.support.prereqs import require_root_and_tools
from wsfixture.errors import ImageBuildError, TemplateError
from wsfixture.host import ledger, settings, system
from wsfixture.image import obtain, setid
from wsfixture.image.cache import DAY, free_bytes, make_room
from wsfixture.image.obtain import ensure_image
from wsfixture.image.recipe import Image, ImageRecipe
from wsfixture.image.templates import Template, TemplateShape
from wsfixture.workspaces.prepare import recipe_for


def fake_image(cache: Path, recipe: ImageRecipe, key: str = "", days_ago: float = 0) -> Path:
    """An image directory as a build leaves it (a tree, recipe.json, ready, a use stamp)."""
    directory = cache / "images" / (key or recipe.key)
    (directory / "root" / "etc").mkdir(parents=True)
    (directory / "root" / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (directory / "recipe.json").write_text(json.dumps(dataclasses.asdict(recipe)))
    (directory / "ready").write_text("0\n")
    used = directory / "used"
    used.touch()
    stamp = time.time() - days_ago * DAY
    os.utime(used, (stamp, stamp))
    return directory


def prune(cache: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", "images", "--prune", "--json"],
        env={**os.environ, "WSFIXTURE_CACHE_DIR": str(cache)},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    removed: list[str] = json.loads(result.stdout)["removed"]
    return removed


def test_prune_keeps_what_is_used_or_mounted(tmp_path: Path) -> None:
    require_root_and_tools("mount")
    cache = tmp_path / "cache"
    base = ImageRecipe.base_of("container")
    layer = ImageRecipe.for_packages(["curl"])
    old = fake_image(cache, base, key="bookworm-container-0123456789abcdef")
    stale = fake_image(cache, ImageRecipe.for_packages(["git"]), days_ago=30)
    kept_layer = fake_image(cache, layer, days_ago=1)
    kept_base = fake_image(cache, base, days_ago=30)  # unused itself, but under kept_layer
    mounted = fake_image(cache, base, key="bookworm-container-fedcba9876543210")
    overlay = tmp_path / "overlay"
    for name in ("upper", "work", "merged"):
        (overlay / name).mkdir(parents=True)
    options = f"lowerdir={mounted / 'root'},upperdir={overlay / 'upper'},workdir={overlay / 'work'}"
    system.run(["mount", "-t", "overlay", "overlay", "-o", options, str(overlay / "merged")])
    try:
        assert set(prune(cache)) == {old.name, stale.name}
        assert not old.exists()
        assert not stale.exists()
        assert kept_layer.exists()
        assert kept_base.exists()
        assert mounted.exists(), "a container stands on it"
    finally:
        system.run(["umount", str(overlay / "merged")])
    assert prune(cache) == [mounted.name]
    assert prune(cache) == []


def test_a_package_that_does_not_exist_names_the_layer_and_apts_error() -> None:
    recipe = ImageRecipe.for_packages(["curl", "ngnix"])
    with pytest.raises(ImageBuildError) as info:
        ensure_image(recipe, progress=lambda line: None)
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"image {recipe.key} (curl, ngnix over the container base): ")
    assert first.endswith("E: Unable to locate package ngnix")
    assert "Attempted to remove disk file system" not in str(info.value)
    images = settings.current().images_dir
    assert not (images / recipe.key).exists()
    assert not list(images.glob(f"{recipe.key}.building-*")), "nothing half made"


def images_cli(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", "images", *args],
        env={**os.environ, "WSFIXTURE_CACHE_DIR": str(cache)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_images_have_sizes_and_one_can_be_removed(tmp_path: Path) -> None:
    require_root_and_tools()
    cache = tmp_path / "cache"
    base = fake_image(cache, ImageRecipe.base_of("container"), days_ago=1)
    layer = fake_image(cache, ImageRecipe.for_packages(["curl"]), days_ago=1)
    template = fake_template(cache, shape_of(ImageRecipe.base_of("container"), 768), size=MIB)
    (layer / "root" / "blob").write_bytes(os.urandom(3 * 2**20))
    rows = {r["image"]: r for r in json.loads(images_cli(cache, "--json").stdout)}
    assert rows[layer.name]["size"] == "3 MiB"
    # Unused, but recent: a dry run says what it keeps and how to go further.
    said = images_cli(cache, "--prune", "--dry-run").stdout
    assert "would remove 0" in said
    assert "kept 2 not in use but used within 14 days" in said
    refused = images_cli(cache, "--remove", base.name)
    assert refused.returncode == 2
    assert f"{base.name}: the base of {layer.name}, which stays" in refused.stderr
    assert base.exists()
    unknown = images_cli(cache, "--remove", "trixie-container-0000000000000000")
    assert unknown.returncode == 2
    assert "no such image or template" in unknown.stderr
    removed = images_cli(cache, "--remove", layer.name, base.name)
    assert removed.returncode == 0, removed.stderr
    assert f"removed {layer.name} (3 MiB)" in removed.stdout
    assert f"removed {template.name} (" in removed.stdout, "an image's templates go with it"
    assert not layer.exists()
    assert not base.exists()
    assert not template.exists()
    assert not (cache / "templates" / f"{template.name}.lock").exists()


MIB = 2**20


def fake_template(
    cache: Path, shape: TemplateShape, key: str = "", hours_ago: float = 0, size: int = 0
) -> Path:
    """A VM template directory as a build leaves it: its ``template.json`` (made for its
    image's build when that image is in ``cache``), a memory file of ``size`` bytes, a use
    stamp."""
    directory = cache / "templates" / (key or shape.key)
    directory.mkdir(parents=True)
    ready = cache / "images" / shape.image_key / "ready"
    meta = {"shape": dataclasses.asdict(shape), "image_ready": ready.read_text()}
    (directory / "ram").write_bytes(os.urandom(size))
    (directory / "template.json").write_text(json.dumps(meta))
    used = directory / "used"
    used.touch()
    stamp = time.time() - hours_ago * 3600
    os.utime(used, (stamp, stamp))
    return directory


def shape_of(image: ImageRecipe, memory: int) -> TemplateShape:
    return TemplateShape(image.key, "q35", 1, memory, 8192, "tcg", "virtiofs", "QEMU 7.2", "ro")


@pytest.fixture
def small_cache(tmp_path: Path) -> Iterator[Path]:
    """A cache on a filesystem of its own, 512 MiB, so that it can run short for real."""
    require_root_and_tools("mount", "mmdebstrap")
    cache = tmp_path / "cache"
    cache.mkdir()
    system.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0700", "tmpfs", str(cache)])
    try:
        yield cache
    finally:
        system.run(["umount", str(cache)])


def test_a_cache_running_short_makes_room_from_what_nothing_uses(small_cache: Path) -> None:
    cache = small_cache
    base = ImageRecipe.base_of("vm")
    image = fake_image(cache, base)  # used just now: a session may be starting on it
    (image / "root" / "blob").write_bytes(os.urandom(40 * MIB))
    old_image = fake_image(cache, base, key="bookworm-vm-0123456789abcdef")
    (old_image / "root" / "blob").write_bytes(os.urandom(120 * MIB))
    old_template = fake_template(
        cache, shape_of(base, 768), key="trixie-vm-old-q35-1c768m", hours_ago=0.1, size=120 * MIB
    )
    idle = fake_template(cache, shape_of(base, 768), hours_ago=2, size=100 * MIB)
    busy = fake_template(cache, shape_of(base, 512), hours_ago=3, size=60 * MIB)
    said: list[str] = []
    floor = settings.current().replace(cache_dir=cache, cache_min_free=150 * MIB)
    with settings.use(floor), open(busy / "ram", "rb"):  # held open, as a VM holds its files
        assert free_bytes(cache) < 200 * MIB
        # Room for 50 MiB and the floor: what this wsfixture never uses again is enough.
        assert make_room(50 * MIB, "a test image", say=said.append) is None
        assert not old_template.exists()
        assert not old_image.exists()
        assert idle.exists()
        assert busy.exists()
        assert image.exists()
        assert [line.split(": removed ")[1].split(",")[0] for line in said] == [
            old_template.name, old_image.name,
        ]  # fmt: skip
        assert free_bytes(cache) >= 200 * MIB
        # More: the idle template goes; what is busy or was just used stays, and what still
        # fits (300 MiB, under the floor) is let through.
        assert make_room(300 * MIB, "a test image") is None
        assert not idle.exists()
        assert busy.exists()
        assert image.exists()
        # What does not fit is refused, saying why, and nothing in use went for it.
        short = make_room(430 * MIB, "a test image")
        assert short is not None
        assert short.startswith(f"no room for a test image in {cache}: 0.4 GiB free, ")
        assert "it needs about 0.4 GiB" in short
        assert busy.exists()
        assert image.exists()
    with settings.use(floor):
        # The controls: let go, the busy template goes; stamped long ago, so does the image.
        assert make_room(500 * MIB, "a test image") is not None
        assert not busy.exists()
        assert image.exists(), "used within the hour"
        long_ago = time.time() - 7200
        os.utime(image / "used", (long_ago, long_ago))
        assert make_room(500 * MIB, "a test image") is None
        assert not image.exists()


def test_an_image_or_template_that_would_not_fit_is_refused_before_anything_is_made(
    small_cache: Path,
) -> None:
    cache = small_cache
    floor = settings.current().replace(cache_dir=cache, cache_min_free=0)
    with settings.use(floor):
        recipe = ImageRecipe.base_of("vm")  # a base needs 2 GiB
        with pytest.raises(ImageBuildError) as info:
            ensure_image(recipe, progress=lambda line: None)
        assert f"image {recipe.key} (the vm base): no room for image {recipe.key}" in str(
            info.value
        )
        assert sorted(p.name for p in (cache / "images").iterdir()) == [f"{recipe.key}.lock"]
        # A template of 768 MiB of memory, on an image that is there.
        image = Image(recipe, fake_image(cache, recipe))
        shape = shape_of(recipe, 768)

        def build(template: Template, record: ledger.Record) -> dict[str, Any]:
            raise AssertionError("a template that does not fit was made")

        with pytest.raises(TemplateError, match=f"no room for VM template {shape.key} in "):
            obtain.ensure_template(shape, image, build, lambda line: None)
        assert sorted(p.name for p in (cache / "templates").iterdir()) == [f"{shape.key}.lock"]


def test_the_cache_is_out_of_other_users_reach(tmp_path: Path) -> None:
    """An image's tree holds what its guest release ships (a VM's kernel, a
    container's binaries): with the cache, images/ and every entry root's alone (0700), a
    host user can neither run nor read one. Control: the same file, copied where anyone
    may go, is read by that user."""
    require_root_and_tools("mmdebstrap", "runuser")
    config = make_config(tmp_path / "state", ct={"type": "container"})
    recipe = recipe_for(config, config.workspaces["ct"])
    while recipe.base is not None:  # the base the suite's containers stand on: its tree
        recipe = recipe.base
    image = ensure_image(recipe)
    root = settings.current().cache_dir
    for directory in (root, root / "images", image.dir):
        assert os.stat(directory).st_mode & 0o777 == 0o700, directory
    inside = image.dir / "root" / "usr" / "bin" / "true"
    refused = subprocess.run(["runuser", "-u", "nobody", "--", str(inside)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr
    read = ["runuser", "-u", "nobody", "--", "cat"]
    unread = subprocess.run([*read, str(inside)], capture_output=True, text=True, check=False)
    assert unread.returncode != 0
    assert "Permission denied" in unread.stderr
    reachable = Path(tempfile.mkdtemp(prefix="wsft-reach-"))  # not under pytest's 0700 dirs
    try:
        reachable.chmod(0o755)
        (copy := reachable / "true").write_bytes(inside.read_bytes())
        copy.chmod(0o755)
        ran = subprocess.run([*read, str(copy)], capture_output=True, check=False)
        assert ran.returncode == 0, "control: a reachable copy is read"
        assert ran.stdout == inside.read_bytes()
    finally:
        system.remove_tree(reachable)


def test_a_vm_trees_privileged_files_leave_the_host_and_go_back_into_its_disk(
    tmp_path: Path,
) -> None:
    """``setid.strip`` takes setuid, setgid and file capabilities off a tree (a link to
    such a file stays a link), ``give_back`` writes them into an ext4 image of it: read
    back by debugfs from the disk itself."""
    require_root_and_tools("mkfs.ext4", "debugfs", "setcap")
    tree = tmp_path / "root"
    (tree / "usr" / "bin").mkdir(parents=True)
    for name, mode in (("su", 0o4755), ("chage", 0o2755), ("ping", 0o755), ("ls", 0o755)):
        (tree / "usr" / "bin" / name).write_bytes(b"\x7fELF")
        os.chown(tree / "usr" / "bin" / name, 0, 42 if name == "chage" else 0)
        (tree / "usr" / "bin" / name).chmod(mode)  # after chown, which clears it
    subprocess.run(["setcap", "cap_net_raw+ep", str(tree / "usr/bin/ping")], check=True)
    (tree / "usr" / "bin" / "su-link").symlink_to("su")
    found = setid.strip(tree)
    assert [(e.path, oct(e.mode), e.caps is not None) for e in found] == [
        ("usr/bin/chage", "0o2755", False),
        ("usr/bin/ping", "0o755", True),
        ("usr/bin/su", "0o4755", False),
    ]
    for path in (tree / "usr" / "bin").iterdir():
        st = path.lstat()
        assert not st.st_mode & 0o6000, path
        assert "security.capability" not in os.listxattr(path, follow_symlinks=False)
    assert (tree / "usr/bin/su-link").readlink() == Path("su")
    disk = tmp_path / "root.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(disk), "16M"], check=True)
    debugfs = system.require_tool("debugfs")

    def in_disk(command: str) -> str:
        return subprocess.run([debugfs, "-R", command, str(disk)], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip

    assert "Mode:  0755" in in_disk("stat /usr/bin/su")  # control: mkfs copied the stripped
    setid.give_back(disk, found, debugfs)
    assert "Mode:  04755" in in_disk("stat /usr/bin/su")
    assert "Mode:  02755" in in_disk("stat /usr/bin/chage")
    assert "security.capability (20)" in in_disk("ea_list /usr/bin/ping")
    assert "Mode:  0755" in in_disk("stat /usr/bin/ls")
    with pytest.raises(ImageBuildError, match="File not found"):
        setid.give_back(disk, [setid.Privileged("usr/bin/nosuch", 0o4755)], debugfs)


def test_the_images_listing_says_what_du_says() -> None:
    """`wsfixture images`' size of each image and template is `du -s`'s of its directory
    (a template's hard links to its image's disk counted, and said to be shared)."""
    require_root_and_tools("du")
    listed = json.loads(subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", "images", "--json"],
        capture_output=True, text=True, check=True,
    ).stdout)  # fmt: skip
    cache = settings.current().cache_dir
    entries = [row for row in listed if "bytes" in row]
    assert entries, "the suite's images are in the cache"
    assert any(row["shared_bytes"] for row in entries if "template" in row["kind"])
    for row in entries:
        kind = "templates" if "template" in row["kind"] else "images"
        du = subprocess.run(["du", "-s", "--block-size=1", str(cache / kind / row["image"])],
                            capture_output=True, text=True, check=True)  # fmt: skip
        assert abs(row["bytes"] - int(du.stdout.split()[0])) <= 2**20, row  # (a use stamp)
