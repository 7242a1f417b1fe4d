"""Images and VM templates through a real OCI registry (Debian's docker-registry, the
reference distribution registry, started here on 127.0.0.1 with a throwaway storage dir):
pushed from the cache, pulled into an empty one, a container and a restored VM booted from
what was pulled without building or making anything; a tampered blob, a template of
another QEMU, a missing key, a malformed reference, 401 and 500 answers, and an
unreachable registry."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import booted, make_config
from tests.support.leaks import staging_records
from tests.support.prereqs import require_root_and_tools
from tests.support.registry import free_port, local_registry, patched_env, serving
from wsfixture.host import ledger, settings, system
from wsfixture.image import registry, shared_cache, store, templates
from wsfixture.workspaces.prepare import recipe_for

SHAPE = {"type": "vm", "vcpu": 1, "memory": 768}


def wsf(
    *args: str, cache: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"WSFIXTURE_CACHE_DIR": str(cache)} if cache else {}), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", *args],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A docker-registry on 127.0.0.1 (host:port) and its storage dir."""
    require_root_and_tools("docker-registry")
    with local_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def pushed(
    registry_host: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[str]]:
    """The container base image and a VM template (and its image), booted once in the
    real cache (made there if need be), pushed under REF:trixie."""
    top = tmp_path_factory.mktemp("pushed")
    config = make_config(top / "state", ct={"type": "container"}, vm=SHAPE)
    with booted(config, "ct", "vm") as (_, vm):
        assert vm._backend is not None
        template = vm._backend.checkpoint_shape().split("@")[0]
    keys = [recipe_for(config, config.workspaces["ct"]).key, template]
    ref = f"{registry_host[0]}/team/wsfixture-images:trixie"
    out = wsf("images", "push", ref, *keys)
    assert out.returncode == 0, out.stderr
    assert f"pushed template {template} to " in out.stdout
    return ref, keys


def test_pulled_images_boot_without_building(pushed: tuple[str, list[str]], tmp_path: Path) -> None:
    ref, keys = pushed
    cache = tmp_path / "cache"
    try:
        pulled_and_booted(ref, keys, cache, tmp_path)
    finally:  # the image's tree (device nodes): not left to pytest's kept tmp dirs
        if cache.exists():
            system.remove_tree(cache)


def pulled_and_booted(ref: str, keys: list[str], cache: Path, tmp_path: Path) -> None:
    pulled = wsf("images", "pull", ref, cache=cache)
    assert pulled.returncode == 0, pulled.stderr
    assert f"{keys[1]}: imported" in pulled.stdout
    assert not [p for p in cache.rglob("*") if store.is_staging(p)]
    config = make_config(tmp_path / "state", ct={"type": "container"}, vm=SHAPE)
    pulled_cache = settings.current().replace(cache_dir=cache)
    with settings.use(pulled_cache), booted(config, "ct", "vm") as (ct, vm):
        # Restored from the pulled template: no template boot, no mmdebstrap.
        assert vm.describe()["boot"] == f"restored from template {keys[1]}"
        assert ct.succeed("hostname").strip() == "ct"
    real = settings.current().cache_dir
    ready = (cache / "images" / keys[0] / store.READY).read_text()
    assert ready == (real / "images" / keys[0] / store.READY).read_text(), "never rebuilt"
    made = templates.Template(cache / "templates" / keys[1]).meta()["made"]
    assert made == templates.Template(real / "templates" / keys[1]).meta()["made"]
    # Pulled again: what the cache holds is kept before a byte is downloaded. The proof:
    # room for a download is never asked for (a floor no disk has would refuse it).
    no_room = {"WSFIXTURE_CACHE_MIN_FREE": "1000000"}
    again = wsf("images", "pull", ref, cache=cache, env=no_room)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()  # the index's entries: the template's image too
    assert all(line.endswith(": present, kept") for line in lines), lines
    assert {f"{key}: present, kept" for key in keys} <= set(lines)


def test_a_tampered_blob_is_refused_by_its_digest(
    pushed: tuple[str, list[str]], registry_host: tuple[str, Path], tmp_path: Path
) -> None:
    ref, keys = pushed
    _, storage = registry_host
    manifest = registry.Registry(registry.Reference.parse(ref)).get_manifest(keys[0])
    assert manifest is not None
    digest = manifest["layers"][0]["digest"].removeprefix("sha256:")
    data = storage / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    original = data.read_bytes()
    try:
        data.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        cache = tmp_path / "cache"
        refused = wsf("images", "pull", ref, keys[0], cache=cache)
        assert refused.returncode == 1
        assert f"blob sha256:{digest} arrived as sha256:" in refused.stderr
        assert "refused" in refused.stderr
        assert not (cache / "images" / keys[0]).exists()
        assert not [p for p in cache.rglob("*") if store.is_staging(p)]
    finally:
        data.write_bytes(original)


def test_a_template_of_another_qemu_is_refused(
    pushed: tuple[str, list[str]], registry_host: tuple[str, Path], tmp_path: Path
) -> None:
    ref, keys = pushed
    source = registry.Registry(registry.Reference.parse(ref))
    other = registry.Registry(registry.Reference.parse(f"{registry_host[0]}/team/other"))
    manifest = source.get_manifest(keys[1])
    assert manifest is not None
    config = json.loads(source.blob_bytes(manifest["config"]["digest"]))
    config["shape"]["qemu"] = "QEMU emulator version 1.0.0"
    blob = json.dumps(config).encode()
    with open(tmp_path / "config.json", "w+b") as stream:
        stream.write(blob)
        digest, size = registry.describe(stream)
        other.push_blob(stream, digest, size)
    layer = manifest["layers"][0]
    with open(tmp_path / "layer", "w+b") as stream:  # the same layer, mounted across
        source.fetch_blob(layer["digest"], layer["size"], tmp_path / "layer")
        other.push_blob(stream, layer["digest"], layer["size"])
    other.put_manifest(keys[1], {**manifest, "config": {**manifest["config"], "digest": digest,
                                                         "size": size}})  # fmt: skip
    said = wsf("images", "pull", f"{registry_host[0]}/team/other", keys[1],
               cache=tmp_path / "cache")  # fmt: skip
    assert said.returncode == 1
    assert f"{keys[1]}: refused: a template made by 'QEMU emulator version 1.0.0'" in said.stdout


def test_bad_references_and_answers(pushed: tuple[str, list[str]], tmp_path: Path) -> None:
    ref, _ = pushed
    cache = tmp_path / "cache"
    malformed = wsf("images", "pull", "not a reference", cache=cache)
    assert "image cache reference 'not a reference' is malformed; allowed: HOST[:PORT]/NAME" in (
        malformed.stderr
    )
    missing = wsf("images", "pull", ref.rsplit(":", 1)[0], "no-such-key", cache=cache)
    assert "team/wsfixture-images has no 'no-such-key'" in missing.stderr
    cases = (
        (401, {}, "asks for credentials and none were found (~/.docker/config.json"),
        (401, {"WSFIXTURE_REGISTRY_USERNAME": "u", "WSFIXTURE_REGISTRY_PASSWORD": "wrong"},
         "401 unauthorized; give credentials in ~/.docker/config.json"),
        (500, {}, "500 (the registry broke)"),
    )  # fmt: skip
    for status, env, said in cases:
        with answering(status) as host, patched_env(env | {"DOCKER_CONFIG": str(tmp_path)}):
            failed = wsf("images", "pull", f"{host}/team/x:tag", cache=cache)
        assert failed.returncode == 1
        assert said in failed.stderr, failed.stderr
    assert not list(cache.rglob(f"*{store.STAGING_MARK}*"))
    assert staging_records(cache) == []


def test_an_unreachable_cache_falls_back_to_building_and_says_so_once() -> None:
    said: list[str] = []
    closed = registry.Reference.parse(f"127.0.0.1:{free_port()}/team/images")
    cache = shared_cache.SharedCache(closed, push_built=True)
    assert cache.fetch("trixie-container-anything", said.append) is False
    assert cache.fetch("trixie-vm-anything", said.append) is False
    cache.publish("trixie-container-anything", said.append)
    assert len(said) == 1
    assert said[0].startswith(f"image cache {closed} unreachable (registry 127.0.0.1:")
    assert said[0].endswith(": building here")


@contextlib.contextmanager
def answering(status: int) -> Iterator[str]:
    """A stand-in registry on 127.0.0.1 that answers every request with ``status``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"the registry broke" if status == 500 else b"{}"
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *_: object) -> None:
            pass

    with serving(Handler) as address:
        yield address


def test_a_killed_pull_leaves_nothing_after_gc(
    pushed: tuple[str, list[str]], tmp_path: Path
) -> None:
    """SIGKILL while a template downloads: its staging dir is in the ledger, and one gc
    removes it; nothing half-pulled is in the cache."""
    ref, keys = pushed
    cache = tmp_path / "cache"
    env = {**os.environ, "WSFIXTURE_CACHE_DIR": str(cache)}
    puller = subprocess.Popen(
        [sys.executable, "-m", "wsfixture.cli", "images", "pull", ref.rsplit(":", 1)[0], keys[1]],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(cache.glob(f".pull{store.STAGING_MARK}{puller.pid}/*.tar")):
            assert puller.poll() is None, "the pull ended before its download was seen"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        puller.kill()  # our own child, by PID
    finally:
        puller.wait()
    assert [r for r in ledger.records() if r.owner.pid == puller.pid], "on record until gc"
    gc = wsf("gc", cache=cache)
    assert gc.returncode == 0, gc.stderr
    assert not [r for r in ledger.records() if r.owner.pid == puller.pid]
    # The cache's own (empty, 0700) directories, and no entry nor staging in them.
    assert sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) == ["images", "templates"]
