"""Which cached images a prune removes: pure selection logic."""

from __future__ import annotations

from pathlib import Path

from wsfixture.image.cache import DAY, CachedImage, choose_prunable
from wsfixture.image.recipe import ImageRecipe

NOW = 1_800_000_000.0
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
