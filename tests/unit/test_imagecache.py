"""Which cached images a prune removes, and in what order making room removes them: pure
selection logic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from wsfixture.image.cache import (
    DAY,
    CachedImage,
    CachedTemplate,
    choose_prunable,
    eviction_order,
)
from wsfixture.image.recipe import ImageRecipe
from wsfixture.image.templates import TemplateShape

NOW = 1_800_000_000.0
HOUR = 3600.0
BASE = ImageRecipe.base_of("container")
LAYER = ImageRecipe.for_packages(["curl"])


def cached(recipe: ImageRecipe | None, key: str = "", days_ago: float = 0) -> CachedImage:
    key = key or (recipe.key if recipe else "unreadable")
    return CachedImage(key, Path("/cache/images") / key, recipe, NOW - days_ago * DAY)


def keys(images: list[CachedImage]) -> set[str]:
    return {image.key for image in images}


def test_older_wsfixture_and_long_unused_go_recent_current_stays() -> None:
    old = cached(BASE, key="bookworm-container-0123456789abcdef")  # key no longer matches
    unreadable = cached(None)
    recent = cached(BASE, days_ago=1)
    assert not old.current
    chosen = choose_prunable([old, unreadable, recent], NOW, 14, set())
    assert keys(chosen) == {old.key}
    assert unreadable.state == "unknown"
    assert old.state == "older wsfixture"
    assert keys(choose_prunable([recent], NOW, 0.5, set())) == {recent.key}


def test_a_layer_that_stays_keeps_its_base() -> None:
    base, layer = cached(BASE, days_ago=30), cached(LAYER, days_ago=1)
    assert choose_prunable([base, layer], NOW, 14, set()) == []
    stale_layer = cached(LAYER, days_ago=20)
    assert keys(choose_prunable([base, stale_layer], NOW, 14, set())) == {base.key, LAYER.key}


def test_busy_images_and_the_bases_under_them_stay() -> None:
    base, layer = cached(BASE, days_ago=30), cached(LAYER, days_ago=30)
    old = cached(BASE, key="bookworm-container-0123456789abcdef")
    assert choose_prunable([base, layer, old], NOW, 14, {layer.key, old.key}) == []


def test_an_image_whose_recipe_cannot_be_read_is_never_pruned() -> None:
    unknown = cached(None, days_ago=400)
    assert choose_prunable([unknown], NOW, 14, set()) == []
    assert choose_prunable([unknown], NOW, 14, {unknown.key}) == []


def shape_of(image: ImageRecipe, memory: int = 768) -> TemplateShape:
    return TemplateShape(
        image.key, "q35", 1, memory, 8192, "tcg", "virtiofs", "QEMU emulator version 7.2", "ro"
    )


def template(
    images_dir: Path, shape: TemplateShape, key: str = "", hours_ago: float = 0
) -> CachedTemplate:
    """A template of ``shape`` as the cache lists it; made for its image's build when that
    image is in ``images_dir``."""
    ready = images_dir / shape.image_key / "ready"
    meta = {"shape": dataclasses.asdict(shape), "image_ready": ready.read_text()}
    key = key or shape.key
    return CachedTemplate(key, images_dir.parent / "templates" / key, meta, NOW - hours_ago * HOUR)


def test_room_is_made_from_what_will_never_be_used_again_first_then_the_least_used(
    tmp_path: Path,
) -> None:
    images_dir = tmp_path / "images"
    for recipe in (BASE, LAYER):
        (images_dir / recipe.key).mkdir(parents=True)
        (images_dir / recipe.key / "ready").write_text("1\n")
    old_layer = cached(LAYER, key="bookworm-container-0123456789abcdef", days_ago=0.01)
    old_base = cached(BASE, key="bookworm-container-fedcba9876543210", days_ago=2)
    base, layer = cached(BASE, days_ago=3), cached(LAYER, days_ago=3)  # a tie: layer first
    recent = cached(ImageRecipe.base_of("vm"), days_ago=0.01)  # within the hour
    current = template(images_dir, shape_of(BASE), hours_ago=5)
    older_current = template(images_dir, shape_of(LAYER), hours_ago=9)
    just_used = template(images_dir, shape_of(BASE, 512), hours_ago=0.5)
    old_template = template(images_dir, shape_of(BASE, 1024), key="trixie-vm-x-old", hours_ago=0.1)
    busy = template(images_dir, shape_of(BASE, 2048), key="trixie-vm-x-busy", hours_ago=99)
    order = eviction_order(
        [current, old_template, busy, just_used, older_current],
        [recent, base, layer, old_base, old_layer],
        images_dir, NOW, {busy.key},
    )  # fmt: skip
    assert [e.key for e in order] == [
        old_template.key,  # an older wsfixture's, though used minutes ago
        old_base.key,
        old_layer.key,
        older_current.key,  # idle the longest
        current.key,
        layer.key,
        base.key,  # after its layer
    ]
    # A busy or recently used layer keeps its base: neither goes, whatever their age.
    assert eviction_order([], [base, layer], images_dir, NOW, {layer.key}) == []
    fresh_layer = cached(LAYER, days_ago=0.01)
    assert eviction_order([], [base, fresh_layer], images_dir, NOW, set()) == []
