"""`wsfixture images export` / `import`, for real: the cache's container image and a VM
template carried through a file into an empty cache, owners, modes, xattrs and file
capabilities kept exactly; a container and a restored VM then boot from the imported cache
without building or making anything; a full disk and a tampered file leave nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.support.configs import booted, make_config
from tests.support.leaks import staging_records
from tests.support.prereqs import require_root_and_tools
from wsfixture.host import settings, system
from wsfixture.image import transfer
from wsfixture.model.config import load_config
from wsfixture.workspaces.prepare import recipe_for

SHAPE = {"type": "vm", "vcpu": 1, "memory": 768}  # the bench's: its template exists early


def wsf(
    *args: str, cache: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"WSFIXTURE_CACHE_DIR": str(cache)} if cache else {})}
    result = subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", *args],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0 or not check, (args, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The container base image and a VM's image and template, booted once in the real
    cache (made there if need be), exported into one file."""
    require_root_and_tools("tar", "systemd-nspawn", "qemu-system-x86_64")
    top = tmp_path_factory.mktemp("transfer")
    config = make_config(top / "state", ct={"type": "container"}, vm=SHAPE)
    with booted(config, "ct", "vm") as (_, vm):
        assert vm._backend is not None
        template = vm._backend.checkpoint_shape().split("@")[0]  # the one it restored from
    keys = [recipe_for(config, config.workspaces["ct"]).key, template]
    archive = top / "cache.tar"
    out = wsf("images", "export", str(archive), *keys).stdout
    assert f"exported template {template}" in out
    return archive, keys


def test_an_import_is_exactly_what_was_exported(
    exported: tuple[Path, list[str]], tmp_path: Path
) -> None:
    archive, keys = exported
    cache = tmp_path / "cache"
    try:
        check_import(archive, keys, cache)
    finally:  # an image's tree (device nodes, a file capability): not left to pytest's tmp
        system.remove_tree(cache)


def check_import(archive: Path, keys: list[str], cache: Path) -> None:
    said = wsf("images", "import", str(archive), cache=cache).stdout
    assert f"template {keys[1]}: imported" in said
    # Every file as the real cache holds it: type, owner, mode, size, xattrs, link (the
    # contents' digests were checked by the import itself, against the same manifest).
    entries = transfer.entries_for(keys)
    assert transfer.facts_of(cache, entries, digests=False) == transfer.facts_of(
        settings.current().cache_dir, entries, digests=False
    )
    # Owners shifted to 2^30 and a v3 file capability survive, by number, byte for byte.
    root = cache / "images" / keys[0] / "root"
    assert (root / "etc").stat().st_uid == 2**30
    cap = os.getxattr(root / "usr" / "bin" / "ping", "security.capability")
    assert int.from_bytes(cap[:4], "little") >> 24 == 3  # VFS_CAP_REVISION_3
    assert int.from_bytes(cap[20:24], "little") == 2**30  # its root id: the shifted root
    # Imported again: present, kept (never rebuilt nor replaced). Booting from an imported
    # cache is test_registry's (a pull is an import).
    again = wsf("images", "import", str(archive), cache=cache).stdout
    assert f"image {keys[0]}: present, kept" in again
    # ... known from its manifest alone: the same archive cut short after it says the same
    # (the whole one is never read through again, nor unpacked).
    cut = cache.parent / "cut.tar"
    with tarfile.open(archive) as tar:
        manifest = tar.next()
        assert manifest is not None
        end = manifest.offset_data + manifest.size + 2048  # and the next header, partly
    with open(archive, "rb") as whole, open(cut, "wb") as short:
        short.write(whole.read(end))
    said = wsf("images", "import", str(cut), cache=cache).stdout
    assert said == "".join(f"{e.kind} {e.key}: present, kept\n" for e in entries)
    cut.unlink()


def test_a_tampered_file_and_a_full_disk_leave_nothing(
    exported: tuple[Path, list[str]], tmp_path: Path
) -> None:
    archive, keys = exported
    # One file's bytes changed in the archive, its manifest as it was: refused.
    tampered = tmp_path / "tampered.tar"
    shutil.copy(archive, tampered)
    listed = f"templates/{keys[1]}/template.json"
    with tarfile.open(tampered) as tar:
        member = tar.getmember(listed)
    with open(tampered, "r+b") as raw:
        raw.seek(member.offset_data)
        first = raw.read(1)
        raw.seek(member.offset_data)
        raw.write(b"[" if first != b"[" else b"{")
    cache = tmp_path / "cache"
    refused = wsf("images", "import", str(tampered), cache=cache, check=False)
    assert refused.returncode == 1
    assert "not as its manifest says, nothing was imported" in refused.stderr
    assert f"{listed}: sha256 is " in refused.stderr
    assert cache_entries(cache) == []
    # A second manifest appended (unpacked after the first, it would be the one read):
    # refused before anything is unpacked.
    scratch = tmp_path / "manifest"
    scratch.mkdir()
    system.run(["tar", "-xf", str(archive), "-C", str(scratch), transfer.MANIFEST])
    appended = tmp_path / "appended.tar"
    shutil.copy(archive, appended)
    system.run(["tar", "--append", "-f", str(appended), "-C", str(scratch), transfer.MANIFEST])
    twice = wsf("images", "import", str(appended), cache=cache, check=False)
    assert twice.returncode == 1
    assert f"member {transfer.MANIFEST!r}" in twice.stderr
    assert cache_entries(cache) == []
    # A full disk: a cache on a 64 MiB tmpfs: refused before a byte is unpacked.
    small = tmp_path / "small"
    small.mkdir()
    system.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)])
    try:
        full = wsf("images", "import", str(archive), cache=small, check=False)
        assert full.returncode == 1
        assert f"no room for the import of {archive}" in full.stderr
        assert cache_entries(small) == []
    finally:
        system.run(["umount", str(small)])
    assert staging_records(tmp_path) == []  # the tampered imports' and the full one's


def cache_entries(cache: Path) -> list[str]:
    """Everything in a cache but its own (empty, 0700) directories and making room's lock."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.name not in ("images", "templates", "room.lock"))  # fmt: skip


def test_bad_export_requests(tmp_path: Path) -> None:
    missing = wsf("images", "export", str(tmp_path / "x.tar"), "no-such-key", check=False)
    assert missing.returncode == 1
    assert "no-such-key: the cache has no such image or VM template" in missing.stderr
    assert not (tmp_path / "x.tar").exists()
    bad = tmp_path / "not-ours.tar"
    with tarfile.open(bad, "w") as out:
        out.add(__file__, arcname="something.py")
    refused = wsf("images", "import", str(bad), cache=tmp_path / "cache", check=False)
    assert "not a wsfixture export" in refused.stderr


def test_images_key_is_stable_and_follows_the_config(tmp_path: Path) -> None:
    config = tmp_path / "ws.toml"
    config.write_text('[workspaces.a]\ntype = "container"\nip = "192.168.83.10"\n')
    first = wsf("-c", str(config), "images", "key").stdout.strip()
    assert first == wsf("-c", str(config), "images", "key").stdout.strip()
    assert len(first) == 32
    config.write_text(config.read_text() + 'packages = ["curl"]\n')
    second = json.loads(wsf("-c", str(config), "images", "key", "--json").stdout)
    assert second["key"] != first
    assert len(second["keys"]) == 2  # the layer and its base


def test_an_export_of_a_config_is_its_whole_set_or_nothing(tmp_path: Path) -> None:
    """A config whose set the cache holds only part of: refused, naming what is missing,
    no file written (a CI cache saved under the whole set's key would keep the part);
    with --build, what is missing is made first and the whole set exported."""
    config = tmp_path / "ws.toml"
    mark = uuid.uuid4().hex  # a layer no cache holds yet: its setup line is new
    config.write_text(f'[workspaces.a]\ntype = "container"\nip = "192.168.83.10"\n'
                      f'setup = ["echo {mark} > /etc/mark"]\n')  # fmt: skip
    loaded = load_config(config)
    layer = recipe_for(loaded, loaded.workspaces["a"]).key
    keys = json.loads(wsf("-c", str(config), "images", "key", "--json").stdout)["keys"]
    target = tmp_path / "set.tar"
    try:
        part = wsf("-c", str(config), "images", "export", str(target), check=False)
        assert part.returncode == 2, part.stderr
        said = f"1 of the {len(keys)} images and templates of {config} are not in the cache: "
        assert said + layer in part.stderr
        assert not target.exists()
        built = wsf("-c", str(config), "images", "export", str(target), "--build").stdout
        assert "building: a" in built
        assert f"{target}: {len(keys)} entries" in built
        with tarfile.open(target) as tar:
            names = tar.getnames()
        assert [n for n in names if n.startswith(f"images/{layer}/") and n.endswith("/etc/mark")]
    finally:
        wsf("images", "--remove", layer, check=False)  # the test's own layer, no one else's
