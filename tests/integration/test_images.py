"""`wsfixture images --prune` on a cache of its own: what goes, what stays, for real mounts."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.prereqs import require_root_and_tools
from wsfixture.errors import ImageBuildError
from wsfixture.host import settings, system
from wsfixture.image.build import ensure_image
from wsfixture.image.cache import DAY
from wsfixture.image.recipe import ImageRecipe


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
    assert not layer.exists()
    assert not base.exists()
