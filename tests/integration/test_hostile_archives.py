"""Export archives are hostile input: each attack is mounted for real against
`wsfixture images import` (root, GNU tar), beside a directory outside the cache that it
aims at, and is refused with nothing written or removed there and nothing left in the
cache; the honest archive the same builder writes is the positive control."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hostile import CONTAINER_ROOT, Member, honest_image, write_archive
from tests.support.prereqs import require_root_and_tools
from wsfixture.host import system
from wsfixture.image import transfer

KEY = "trixie-container-0123456789abcdef"
ENTRY = {"kind": "image", "key": KEY}


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, Path]:
    """(the cache, a directory beside it that holds a victim file); both removed after."""
    require_root_and_tools("tar")
    cache, outside = tmp_path / "top" / "cache", tmp_path / "top" / "outside"
    (outside / "victim").mkdir(parents=True)
    (outside / "victim" / "precious").write_text("keep me")
    yield cache, outside
    system.remove_tree(tmp_path / "top")


def import_file(archive: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", "images", "import", str(archive)],
        env={**os.environ, "WSFIXTURE_CACHE_DIR": str(cache), "WSFIXTURE_CACHE_MIN_FREE": "0"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def everything_under(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


def refused(archive: Path, cache: Path, outside: Path, *said: str) -> str:
    before = everything_under(outside)
    result = import_file(archive, cache)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    for text in said:
        assert text in result.stderr, result.stderr
    assert everything_under(outside) == before  # nothing written or removed out there
    assert (outside / "victim" / "precious").read_text() == "keep me"
    left = [p for p in everything_under(cache) if not p.endswith(".lock")]
    assert left in ([], ["images", "templates"]), left  # no entry, no staging directory
    return result.stderr


def test_the_honest_archive_is_imported_as_written(place: tuple[Path, Path]) -> None:
    cache, _ = place
    archive = write_archive(cache.parent / "honest.tar", [ENTRY], honest_image(KEY))
    result = import_file(archive, cache)
    assert result.returncode == 0, result.stderr
    assert f"image {KEY}: imported" in result.stdout
    su = cache / "images" / KEY / "root" / "bin" / "su"
    st = su.lstat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (CONTAINER_ROOT, 0o4755)
    assert su.stat().st_ino == (su.parent / "su2").stat().st_ino  # the hard link kept
    whiteout = (cache / "images" / KEY / "root" / "gone").lstat()
    assert stat.S_ISCHR(whiteout.st_mode)
    assert whiteout.st_rdev == 0
    # The cache is root's alone: its top, images/ and the entry.
    for directory in (cache, cache / "images", cache / "images" / KEY):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_a_climbing_key_through_a_planted_link_writes_nothing_outside(
    place: tuple[Path, Path],
) -> None:
    """The attack as found: a key with ``..`` and a relative symlink in the archive put
    the payload beside the cache."""
    cache, outside = place
    key = "x/../../../outside/pwn"
    members = [Member("images/x", "symlink", link="d1/d2/d3", mode=0o777),
               Member("images/outside", "dir", mode=0o755),
               Member("images/outside/pwn", "dir", mode=0o755),
               Member("images/outside/pwn/ready", data=b"pwned")]  # fmt: skip
    archive = write_archive(cache.parent / "a.tar", [{"kind": "image", "key": key}], members)
    said = refused(archive, cache, outside, "is not a cache key")
    assert not (outside / "pwn").exists(), said


def test_a_key_naming_a_directory_outside_removes_nothing(place: tuple[Path, Path]) -> None:
    cache, outside = place
    key = "../../outside/victim"
    members = [Member(f"images/{key}", "dir", mode=0o755)]
    archive = write_archive(cache.parent / "a.tar", [{"kind": "image", "key": key}], members)
    refused(archive, cache, outside, "is not a cache key")


def test_a_member_under_a_planted_symlink_is_refused(place: tuple[Path, Path]) -> None:
    cache, outside = place
    members = [*honest_image(KEY),
               Member(f"images/{KEY}/root/out", "symlink", link=str(outside / "victim"),
                      mode=0o777, uid=CONTAINER_ROOT, gid=CONTAINER_ROOT),
               Member(f"images/{KEY}/root/out/precious", data=b"overwritten",
                      uid=CONTAINER_ROOT, gid=CONTAINER_ROOT)]  # fmt: skip
    archive = write_archive(cache.parent / "a.tar", [ENTRY], members)
    refused(archive, cache, outside, "lies under a link")


def test_a_hard_link_out_of_the_archive_is_refused(place: tuple[Path, Path]) -> None:
    cache, outside = place
    files = {m.name: m.fact() for m in honest_image(KEY)}
    target = os.path.relpath(outside / "victim" / "precious", cache)
    link = Member(f"images/{KEY}/root/steal", "hardlink", link=target,
                  uid=CONTAINER_ROOT, gid=CONTAINER_ROOT)  # fmt: skip
    files[link.name] = Member(link.name, data=b"keep me", uid=CONTAINER_ROOT,
                              gid=CONTAINER_ROOT).fact()  # fmt: skip
    archive = write_archive(cache.parent / "a.tar", [ENTRY], [*honest_image(KEY), link], files)
    refused(archive, cache, outside, "not to an earlier regular member")


@pytest.mark.parametrize(
    ("member", "said"),
    [
        (Member(f"images/{KEY}/root/bin/rootsh", data=b"x", mode=0o4755),
         "owner 0:0 in a container"),
        (Member(f"images/{KEY}/ready2", data=b"x", mode=0o4755), "setuid or setgid root"),
        (Member(f"images/{KEY}/root/kmsg", "chr", mode=0o666, uid=CONTAINER_ROOT,
                gid=CONTAINER_ROOT, rdev=(1, 11)), "a device node"),
        (Member(f"images/{KEY}/root/pipe", "fifo", uid=CONTAINER_ROOT, gid=CONTAINER_ROOT),
         "not a regular file, directory, symlink or whiteout"),
    ],
    ids=["uid0-setuid-in-a-container-tree", "setuid-root-outside-a-tree", "device-node", "fifo"],
)  # fmt: skip
def test_privileged_files_and_devices_are_refused(
    place: tuple[Path, Path], member: Member, said: str
) -> None:
    """An importer that kept them made a setuid root shell and /dev/kmsg for host users."""
    cache, outside = place
    archive = write_archive(cache.parent / "a.tar", [ENTRY], [*honest_image(KEY), member])
    refused(archive, cache, outside, said)


def test_a_member_the_manifest_does_not_list_is_refused(place: tuple[Path, Path]) -> None:
    cache, outside = place
    files = {m.name: m.fact() for m in honest_image(KEY)}
    extra = Member(f"images/{KEY}/root/bin/extra", data=b"x", uid=CONTAINER_ROOT,
                   gid=CONTAINER_ROOT)  # fmt: skip
    archive = write_archive(cache.parent / "a.tar", [ENTRY], [*honest_image(KEY), extra], files)
    refused(archive, cache, outside, "not in the manifest")


def test_an_archive_that_is_not_tar_says_so(place: tuple[Path, Path]) -> None:
    cache, outside = place
    junk = cache.parent / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    refused(junk, cache, outside, "not a readable tar archive")


def test_the_python_api_raises_transfer_errors_only(place: tuple[Path, Path]) -> None:
    cache, outside = place
    members = [Member("images/x", "symlink", link="..", mode=0o777)]
    archive = write_archive(cache.parent / "a.tar", [{"kind": "image", "key": "x"}], members)
    with pytest.raises(
        transfer.TransferError, match="an entry's top must be listed as a directory"
    ):
        transfer.import_(archive, cache)
    assert not list(outside.parent.glob("*/pwn"))
