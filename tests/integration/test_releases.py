"""Both Debian releases boot both kinds of workspace with the whole shared base, each from
images (and VM templates) of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.configs import make_config
from wsfixture import checks
from wsfixture.backends import qemu
from wsfixture.image.recipe import ImageRecipe
from wsfixture.model.config import Config
from wsfixture.model.spec import RELEASES
from wsfixture.workspaces import Workspace
from wsfixture.workspaces.prepare import prepare_image

pytestmark = pytest.mark.vm

# Debian's version file, by release.
VERSIONS = {"trixie": "13.", "bookworm": "12."}
VM = {"type": "vm", "vcpu": 1, "memory": 768}


@pytest.fixture(scope="module")
def config(state_root: Path) -> Config:
    # The defaults say bookworm; the trixie workspaces say so themselves: both ways of
    # choosing a release are exercised.
    return make_config(
        state_root,
        defaults={"release": "bookworm"},
        **{
            "bookworm-ct": {"type": "container"},
            "bookworm-vm": VM,
            "trixie-ct": {"type": "container", "release": "trixie"},
            "trixie-vm": {**VM, "release": "trixie"},
        },
    )


@pytest.mark.parametrize("kind", ["ct", "vm"])
@pytest.mark.parametrize("release", RELEASES)
def test_each_release_boots_each_kind_with_the_shared_base(
    running: dict[str, Workspace], release: str, kind: str
) -> None:
    ws = running[f"{release}-{kind}"]
    assert [o for o in checks.verify(ws) if not o.ok] == []
    host = ws.host
    assert host.file("/etc/debian_version").content_string.startswith(VERSIONS[release])
    assert host.system_info.codename == release
    assert host.package("openssh-server").is_installed
    # ping needs a raw socket: Debian 13 gives it none by itself (see osconfig).
    peer = "trixie-ct" if release == "bookworm" else "bookworm-ct"
    assert host.run(f"ping -c 1 -W 2 {peer}").rc == 0


def test_each_release_has_its_own_images_and_templates(
    running: dict[str, Workspace], config: Config
) -> None:
    for kind in ("container", "vm"):
        bases = {release: ImageRecipe.base_of(kind, release) for release in RELEASES}
        assert len({recipe.key for recipe in bases.values()}) == len(RELEASES)
        for release, recipe in bases.items():
            assert recipe.key.startswith(f"{release}-{kind}-")
    images = {name: prepare_image(ws.config, ws.spec) for name, ws in running.items()}
    assert images["bookworm-vm"].dir != images["trixie-vm"].dir
    assert images["bookworm-ct"].dir != images["trixie-ct"].dir
    shapes = {}
    for name in ("bookworm-vm", "trixie-vm"):
        backend = running[name]._backend
        assert isinstance(backend, qemu.QemuBackend)
        # Restored from its shape's template, or the first of its shape, which made it.
        key, boot = backend.shape.key, str(running[name].describe()["boot"])
        assert boot in (f"restored from template {key}", f"made template {key} and went on from it")
        shapes[name] = backend.shape
    assert shapes["bookworm-vm"].image_key == images["bookworm-vm"].recipe.key
    assert shapes["trixie-vm"].image_key == images["trixie-vm"].recipe.key
    assert shapes["bookworm-vm"].key != shapes["trixie-vm"].key
