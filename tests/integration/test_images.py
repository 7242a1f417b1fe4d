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

from tests.conftest import require_root_and_tools
from wsfixture.errors import ImageBuildError
from wsfixture.host import settings, system
from wsfixture.image.build import ensure_image
from wsfixture.image.cache import DAY
from wsfixture.image.recipe import ImageRecipe

pytestmark = pytest.mark.integration


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
