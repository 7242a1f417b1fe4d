"""The shared cache's pure rules: registry references, where credentials come from, and
which pulled entries a host refuses."""

from __future__ import annotations

import base64
import dataclasses
import json
import platform
from pathlib import Path

import pytest

from wsfixture.image.recipe import ImageRecipe
from wsfixture.image.registry import Reference, RegistryError, credentials
from wsfixture.image.shared_cache import refusal

QEMU = "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u18)"


@pytest.mark.parametrize(
    ("text", "host", "name", "tag", "secure"),
    [
        ("registry.example:5000/team/wsfixture-images:trixie", "registry.example:5000",
         "team/wsfixture-images", "trixie", True),
        ("127.0.0.1:5000/images", "127.0.0.1:5000", "images", None, False),
        ("localhost/a/b/c:v1.2", "localhost", "a/b/c", "v1.2", False),
        ("ghcr.io/org/cache:trixie-vm-652478f9492bc2f5", "ghcr.io", "org/cache",
         "trixie-vm-652478f9492bc2f5", True),
    ],
)  # fmt: skip
def test_references(text: str, host: str, name: str, tag: str | None, secure: bool) -> None:
    ref = Reference.parse(text)
    assert (ref.host, ref.name, ref.tag, ref.secure) == (host, name, tag, secure)
    assert str(ref) == text


@pytest.mark.parametrize("text", ["", "images", "Host/UPPER", "h/n:", "h/n:-tag", "h//n", "a b/c"])
def test_malformed_references_say_what_is_allowed(text: str) -> None:
    with pytest.raises(RegistryError, match=r"is malformed; allowed: HOST\[:PORT\]/NAME"):
        Reference.parse(text)


def test_credentials_from_the_environment_then_the_docker_config(tmp_path: Path) -> None:
    env = {"WSFIXTURE_REGISTRY_USERNAME": "ci", "WSFIXTURE_REGISTRY_PASSWORD": "s3cret"}
    assert credentials("r.example", env) == ("ci", "s3cret")
    auth = base64.b64encode(b"me:pa:ss").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"r.example:5000": {"auth": auth}}}))
    assert credentials("r.example:5000", {"DOCKER_CONFIG": str(tmp_path)}) == ("me", "pa:ss")
    assert credentials("other.example", {"DOCKER_CONFIG": str(tmp_path)}) is None


def test_what_a_host_refuses_to_take() -> None:
    recipe = ImageRecipe.base_of("container")
    image = {"kind": "image", "key": recipe.key, "machine": platform.machine(),
             "recipe": dataclasses.asdict(recipe)}  # fmt: skip
    assert refusal(image, recipe.key, lambda: QEMU) is None
    assert "its config names" in str(refusal(image, "other-key", lambda: QEMU))
    elsewhere = {**image, "machine": "riscv64"}
    assert "made on a riscv64 machine" in str(refusal(elsewhere, recipe.key, lambda: QEMU))
    older = {**image, "recipe": {**image["recipe"], "packages": ["bash"]}}
    assert "its recipe makes" in str(refusal(older, recipe.key, lambda: QEMU))
    template = {"kind": "template", "key": "t", "machine": platform.machine(),
                "shape": {"qemu": "QEMU emulator version 8.2.0"}}  # fmt: skip
    assert refusal(template, "t", lambda: "QEMU emulator version 8.2.0") is None
    said = refusal(template, "t", lambda: QEMU)
    assert said == f"a template made by 'QEMU emulator version 8.2.0'; this host has {QEMU!r}"
