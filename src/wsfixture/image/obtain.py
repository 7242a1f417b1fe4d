"""Getting a cache entry, images and VM templates alike: present, or fetched from the
shared cache, or made, exactly once across processes.

Under the entry's lock (``store.locked``): look again (another process may have made it
while we waited), make room for it (``cache.make_room``), fetch it from the shared cache
(``shared_cache.active()``, a registry), and only then make it (``build.build_image``,
``templates.build_template``) and publish it there. One protocol, so a change to it (the
lock, the room, the shared cache) is made once for both kinds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from wsfixture.errors import ImageBuildError, TemplateError
from wsfixture.host import system
from wsfixture.image import cache, shared_cache, store, templates
from wsfixture.image.build import BASE_ROOM, LAYER_ROOM, Progress, build_image, stderr_progress
from wsfixture.image.recipe import Image, ImageRecipe, image_dir
from wsfixture.image.templates import TEMPLATE_ROOM_MIB, Template, TemplateShape


def obtain(
    entry: Path,
    key: str,
    missing: Callable[[], str | None],
    room: tuple[int, str],
    make: Callable[[str], None],
    say: Progress,
    cache_dir: Path | None = None,
) -> str | None:
    """Make sure the entry ``entry`` (``key``) is there: ``missing`` says why it is not
    (None: it is), ``room`` is (bytes it needs, what it is, for the error), ``make``
    makes it (told why). Returns why ``room`` does not fit (nothing was made), else None."""
    store.private_dirs(cache_dir)
    with store.locked(store.lock_path(entry)):
        if missing() is None:
            return None  # made by another process while we waited
        need, what = room
        if short := cache.make_room(need, what, cache_dir, say):
            return short
        shared = shared_cache.active()
        if shared and shared.fetch(key, say) and missing() is None:
            return None
        if (why := missing()) is not None:
            make(why)
            if shared:
                shared.publish(key, say)
    return None


# Builds that failed in this process, by key: asked for again (every test of a session that
# wants the image), one fails at once with the same reason, said once, instead of building
# again and printing the same failure for each (another process tries anew).
_failed: dict[str, ImageBuildError] = {}


def ensure_image(
    recipe: ImageRecipe,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    sources: Mapping[str, Path] | None = None,
    began: float | None = None,
) -> Image:
    """The cached image for ``recipe`` (and its base), built first if it is not there.
    ``sources``: where the recipe's files are on the host, by guest path. ``began``: when
    the build of the image this one is the base of began (its progress counts from there)."""
    if (failed := _failed.get(recipe.key)) is not None:
        raise ImageBuildError(failed.image, f"{failed.reason} (this run built it once already; "
                              "not again)")  # fmt: skip
    began = time.monotonic() if began is None else began
    if recipe.base is not None:
        ensure_image(recipe.base, cache_dir, progress, began=began)
    image = Image(recipe, image_dir(recipe, cache_dir))
    if image.ready:
        image.verify()
    else:
        system.require_root()
        system.require_tool("mmdebstrap" if recipe.base is None else "systemd-nspawn")
        say = progress or stderr_progress

        def make(why: str) -> None:
            try:
                build_image(image, say, sources or {}, began)
            except ImageBuildError as exc:
                _failed[recipe.key] = exc
                raise

        def missing() -> str | None:
            return None if image.ready else "not built"

        need = BASE_ROOM if recipe.base is None else LAYER_ROOM
        room = (need, f"image {recipe.label}")
        if short := obtain(image.dir, recipe.key, missing, room, make, say, cache_dir):
            raise ImageBuildError(recipe.label, short)
    store.mark_used(image.dir)  # last use, for `wsfixture images --prune`
    return image


def ensure_template(
    shape: TemplateShape,
    image: Image,
    build: templates.Build,
    progress: Callable[[str], None],
    cache_dir: Path | None = None,
) -> Template:
    """The template for ``shape``, made by ``build`` if there is none or it cannot be
    restored; exactly once across processes."""
    template = Template(store.templates_dir(cache_dir) / shape.key)
    if template.problem(shape, image) is None:
        return template

    def make(why: str) -> None:
        progress(f"making VM template {shape.key} ({why})")
        templates.build_template(template, shape, image, build)

    def missing() -> str | None:
        return template.problem(shape, image)

    room = ((shape.memory + TEMPLATE_ROOM_MIB) * 2**20, f"VM template {shape.key}")
    if short := obtain(template.dir, shape.key, missing, room, make, progress, cache_dir):
        raise TemplateError(short)
    return template
