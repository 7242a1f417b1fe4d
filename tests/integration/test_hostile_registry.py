"""A registry is hostile input: a crafted one on 127.0.0.1 (``tests.support.hostile``)
serves climbing keys, an archive that climbs inside a well-formed artifact, a blob longer
than its descriptor, digests that are paths, answers that are not JSON objects, and an
upload ``Location`` on another host. Each is refused with a RegistryError or a
TransferError (never a traceback), nothing is written outside the cache's staging, and
no credentials leave for another host; the honest artifact is the positive control."""

from __future__ import annotations

import io
import json
import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hostile import Crafted, Member, hostile_registry, write_archive
from tests.support.prereqs import require_root_and_tools
from wsfixture.errors import WsfixtureError
from wsfixture.host import system
from wsfixture.image import shared_cache
from wsfixture.image.registry import Reference, Registry, RegistryError, describe

KEY = "trixie-vm-0123456789abcdef-x86_64-1c768m-0123456789abcdef"
QEMU = "QEMU emulator version 7.2.0"


def template_members(key: str) -> list[Member]:
    top = f"templates/{key}"
    return [Member(top, "dir", mode=0o700), Member(f"{top}/template.json", data=b"{}")]


def artifact(crafted: Crafted, tmp: Path, key: str, archive: Path) -> None:
    """A well-formed wsfixture artifact tagged ``key`` whose layer is ``archive``."""
    config = {"kind": "template", "key": key, "machine": platform.machine(),
              "shape": {"qemu": QEMU}}  # fmt: skip
    crafted.manifests[key] = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": crafted.blob(json.dumps(config).encode()),
        "layers": [crafted.blob(archive.read_bytes())],
    }  # fmt: skip


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Path]:
    require_root_and_tools("tar")
    yield tmp_path / "cache"
    system.remove_tree(tmp_path / "cache")


def pull(host: str, keys: list[str], cache: Path) -> list[tuple[str, str]]:
    return shared_cache.pull(Reference.parse(f"{host}/team/images"), keys, lambda: QEMU, cache)


def entries(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if ".lock" not in p.name)


def test_the_honest_artifact_is_pulled(cache: Path, tmp_path: Path) -> None:
    crafted = Crafted()
    artifact(crafted, tmp_path, KEY, write_archive(tmp_path / "a.tar",
             [{"kind": "template", "key": KEY}], template_members(KEY)))  # fmt: skip
    with hostile_registry(crafted) as host:
        assert pull(host, [KEY], cache) == [(KEY, "imported")]
    assert (cache / "templates" / KEY / "template.json").read_bytes() == b"{}"


def test_an_index_naming_a_climbing_key_is_refused(cache: Path, tmp_path: Path) -> None:
    crafted = Crafted()
    crafted.manifests["v1"] = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"annotations": {shared_cache.KEY_ANNOTATION: "../../outside/pwn"}}],
    }  # fmt: skip
    with hostile_registry(crafted) as host:
        with pytest.raises(RegistryError, match="is not a cache key"):
            shared_cache.listed(Reference.parse(f"{host}/team/images:v1"))
        with pytest.raises(RegistryError, match="is not a cache key"):
            pull(host, ["../../outside/pwn"], cache)
    assert not (tmp_path / "outside").exists()
    assert not any(p.name.endswith(".tar") for p in tmp_path.rglob("*"))


def test_an_artifact_whose_archive_climbs_is_refused(cache: Path, tmp_path: Path) -> None:
    crafted = Crafted()
    bad = "../../outside/pwn"
    archive = write_archive(tmp_path / "a.tar", [{"kind": "template", "key": bad}],
                            template_members(bad))  # fmt: skip
    artifact(crafted, tmp_path, KEY, archive)
    with hostile_registry(crafted) as host, pytest.raises(WsfixtureError, match="not a cache key"):
        pull(host, [KEY], cache)
    assert not (tmp_path / "outside").exists()
    assert entries(cache) in ([], ["images", "templates"])  # nor any staging left


def test_an_artifact_holding_another_entry_than_its_own_is_refused(
    cache: Path, tmp_path: Path
) -> None:
    """Tagged as one template, its archive brings another (a valid key): the cache would
    hold an entry no one asked for, under a key the host trusts."""
    crafted = Crafted()
    other = KEY.replace("0123456789abcdef-x86", "fedcba9876543210-x86")
    archive = write_archive(tmp_path / "a.tar", [{"kind": "template", "key": other}],
                            template_members(other))  # fmt: skip
    artifact(crafted, tmp_path, KEY, archive)
    with hostile_registry(crafted) as host, pytest.raises(WsfixtureError, match="refused"):
        pull(host, [KEY], cache)
    assert entries(cache) in ([], ["images", "templates"])


def test_a_blob_longer_than_its_descriptor_is_refused_as_it_streams(
    cache: Path, tmp_path: Path
) -> None:
    crafted = Crafted()
    archive = write_archive(tmp_path / "a.tar", [{"kind": "template", "key": KEY}],
                            template_members(KEY))  # fmt: skip
    artifact(crafted, tmp_path, KEY, archive)
    layer = crafted.manifests[KEY]["layers"][0]
    crafted.blobs[layer["digest"]] = archive.read_bytes() + b"\0" * (8 << 20)  # 8 MiB more
    with hostile_registry(crafted) as host:
        with pytest.raises(RegistryError, match=f"is over the {layer['size']} bytes"):
            pull(host, [KEY], cache)
        crafted.blobs[layer["digest"]] = archive.read_bytes()  # control: as described
        assert pull(host, [KEY], cache) == [(KEY, "imported")]


@pytest.mark.parametrize(
    "manifest",
    [
        {"config": {"digest": "../../../etc/passwd", "size": 1}, "layers": []},
        {"config": {"digest": "sha256:" + "0" * 64, "size": 1}, "layers": "everything"},
        {"config": [], "layers": [{"digest": "sha256:" + "0" * 64, "size": -1}]},
        ["not", "an", "object"],
        "plain text",
    ],
    ids=["digest-is-a-path", "layers-not-a-list", "config-not-a-descriptor", "a-list", "text"],
)
def test_answers_that_are_not_the_protocol_are_registry_errors(
    cache: Path, manifest: object
) -> None:
    crafted = Crafted()
    crafted.manifests[KEY] = manifest  # type: ignore[assignment]
    with hostile_registry(crafted) as host, pytest.raises(RegistryError):
        pull(host, [KEY], cache)


def test_credentials_go_to_the_registrys_own_host_only() -> None:
    """An upload ``Location`` on another host is refused before anything is sent there;
    the registry's own (relative) one gets the upload, with the credentials."""
    thief, honest = Crafted(), Crafted(challenge='Basic realm="r"')
    data = b"a blob"
    digest, size = describe(io.BytesIO(data))
    with hostile_registry(thief) as elsewhere, hostile_registry(honest) as host:
        honest.upload_location = f"http://{elsewhere}/steal"
        registry = Registry(Reference.parse(f"{host}/team/images"), ("user", "secret"))
        with pytest.raises(RegistryError, match=f"sent us to http://{elsewhere}: refused"):
            registry.push_blob(io.BytesIO(data), digest, size)
        assert thief.requests == []
        honest.upload_location = "/v2/team/images/blobs/uploads/1"  # control
        registry.push_blob(io.BytesIO(data), digest, size)
    put = [headers for method, _, headers in honest.requests if method == "PUT"]
    assert put, honest.requests
    assert put[-1]["Authorization"].startswith("Basic ")
