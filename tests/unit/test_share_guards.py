"""The pure parts and the host-side mechanisms of the share guarantees (#24): the id maps,
the setid filter (run for real on a throwaway directory, beside the same script without
it), the default ACL's bytes, and writes resolved inside an image tree."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.prereqs import require_root_and_tools
from wsfixture.host import inroot, setid_filter, share_acl
from wsfixture.model.share_ids import (
    CONTAINER_UID_BASE,
    HOST_ROOT_IN_CONTAINER_SHARES,
    SQUASHED_ROOT,
    ShareOwners,
    map_text,
)

B = CONTAINER_UID_BASE


def test_the_share_owner_is_the_source_owner_never_host_root() -> None:
    assert ShareOwners.of(1234, 1235, 1000, 1000) == ShareOwners(1234, 1235, 1000, 1000)
    assert ShareOwners.of(0, 0, 1000, 1000) == ShareOwners(1000, 1000, 1000, 1000)


def test_container_share_map_squashes_root_and_keeps_the_user() -> None:
    uids, gids = ShareOwners.of(1234, 1234, 1000, 1000).container_mount()
    # disk id -> what the container's processes are on the host
    assert (SQUASHED_ROOT, B, 1) in uids  # container root's files: the squashed id
    assert (1234, B + 1000, 1) in uids  # the user's files: the share owner's
    assert (0, HOST_ROOT_IN_CONTAINER_SHARES, 1) in uids  # host root: no container id
    assert not B <= HOST_ROOT_IN_CONTAINER_SHARES < B + 65536
    assert uids == gids
    assert map_text(uids).splitlines()[0] == f"0 {HOST_ROOT_IN_CONTAINER_SHARES} 1"


def test_virtiofsd_map_squashes_root_and_leaves_host_root_out() -> None:
    uids, _ = ShareOwners.of(1234, 1234, 1000, 1000).virtiofsd_namespace()
    assert uids == [(0, SQUASHED_ROOT, 1), (1000, 1234, 1)]
    assert all(outside != 0 for _, outside, _ in uids)


@pytest.mark.parametrize("strength", setid_filter.STRENGTHS)
def test_the_filter_assembles_for_every_architecture(strength: str) -> None:
    for arch in setid_filter.TABLES:
        code = setid_filter.program(strength, arch)
        assert len(code) % 8 == 0
        assert 0 < len(code) // 8 <= 4096
    with pytest.raises(ValueError, match="unknown filter strength"):
        setid_filter.program("loose", setid_filter.AUDIT_ARCH_X86_64)


ATTEMPTS = """
cd "$1"
touch f && chmod 4755 f; echo "chmod-suid $?"
chmod 2755 f; echo "chmod-sgid $?"
chmod 0750 f; echo "chmod-plain $?"
mkdir -m 2775 sgid-dir; echo "mkdir-sgid $?"
mkdir plain-dir; echo "mkdir-plain $?"
python3 -c 'import os; os.open("o", os.O_CREAT | os.O_WRONLY, 0o6755)'; echo "open-setid $?"
mkfifo fifo; echo "mkfifo $?"
mknod null c 1 3; echo "mknod-char $?"
"""


def attempts(strength: str | None, where: Path) -> dict[str, int]:
    out = subprocess.run(
        ["sh", "-c", ATTEMPTS, "sh", str(where)], capture_output=True, text=True, check=True,
        preexec_fn=setid_filter.installer(strength) if strength else None,
    ).stdout  # fmt: skip
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory for setuid files and device nodes, removed after the test (pytest keeps
    its last temporary directories, and nothing privileged may stay behind)."""
    yield tmp_path / "scratch"
    shutil.rmtree(tmp_path / "scratch", ignore_errors=True)


def test_the_filter_refuses_setid_and_the_share_filter_special_files(scratch: Path) -> None:
    require_root_and_tools("python3")
    ok = {"chmod-plain": 0, "mkdir-plain": 0}
    # Positive control: the same script, unfiltered, makes every one of them.
    (scratch / "none").mkdir(parents=True)
    assert set(attempts(None, scratch / "none").values()) == {0}
    assert os.stat(scratch / "none" / "o").st_mode & 0o6000 == 0o6000
    for strength, refused in (
        ("setid", {"chmod-suid", "chmod-sgid", "mkdir-sgid", "open-setid"}),
        ("share", {"chmod-suid", "chmod-sgid", "mkdir-sgid", "open-setid", "mkfifo", "mknod-char"}),
    ):
        where = scratch / strength
        where.mkdir()
        said = attempts(strength, where)
        assert {k for k, v in said.items() if v != 0} == refused, said
        assert all(said[k] == 0 for k in ok)
        for path in where.rglob("*"):
            assert path.lstat().st_mode & 0o6000 == 0, path


def test_the_default_acl_names_the_owner_and_the_squashed_root() -> None:
    value = share_acl.default_acl(1000)
    (version,) = struct.unpack("<I", value[:4])
    entries = [struct.unpack("<HHI", value[4 + 8 * i : 12 + 8 * i]) for i in range(len(value) // 8)]
    assert version == 2
    users = {ident: perm for tag, perm, ident in entries if tag == share_acl.ACL_USER}
    assert users == {1000: 7, SQUASHED_ROOT: 7}
    assert [tag for tag, _, _ in entries] == sorted(tag for tag, _, _ in entries)


def test_writes_stay_inside_the_tree(tmp_path: Path) -> None:
    require_root_and_tools()
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    (tree / "run").mkdir(parents=True)
    (tree / "var").mkdir()
    outside.mkdir()
    # A Debian image's own trap, pointed at the host: an absolute link, and one via '..'.
    (tree / "var" / "run").symlink_to("/run")
    (tree / "var" / "escape").symlink_to(f"../../{outside.name}")
    # Positive control: a naive join follows both out of the tree.
    assert (tree / "var/run").resolve() == Path("/run")
    assert (tree / "var/escape").resolve() == outside
    inroot.write(tree, "/var/run/probe", b"a", 0o644, 0, 0)
    with pytest.raises(NotADirectoryError, match="does not have"):
        inroot.write(tree, "/var/escape/probe", b"b", 0o644, 0, 0, parents_owner=0)
    (tree / outside.name).mkdir()  # now the link's target inside the tree exists
    inroot.write(tree, "/var/escape/probe", b"b", 0o644, 0, 0)
    assert (tree / outside.name / "probe").read_bytes() == b"b"
    assert (tree / "run" / "probe").read_bytes() == b"a"
    assert not Path("/run/probe").exists()
    assert list(outside.iterdir()) == []
    # A link in the last place is replaced, never written through.
    (tree / "etc").mkdir()
    target = outside / "victim"
    target.write_text("host file\n")
    (tree / "etc" / "hosts").symlink_to(target)
    inroot.write(tree, "/etc/hosts", b"guest\n", 0o640, 1 << 30, 1 << 30)
    assert target.read_text() == "host file\n"
    written = (tree / "etc" / "hosts").lstat()
    assert stat.S_ISREG(written.st_mode)
    assert stat.S_IMODE(written.st_mode) == 0o640
    assert written.st_uid == 1 << 30
    assert inroot.read_text(tree, "/etc/hosts") == "guest\n"
    inroot.make_dir(tree, "/home/dev/.ssh", 0o700, 1000, 1000, parents_owner=0)
    assert stat.S_IMODE((tree / "home/dev/.ssh").stat().st_mode) == 0o700
    with pytest.raises(ValueError, match="not an absolute path"):
        inroot.write(tree, "relative", b"", 0o644, 0, 0)


def test_a_port_filter_names_its_own_mac_and_address_only() -> None:
    from wsfixture.net import guard

    added = guard.add_port("wsc-1", "02:aa:bb:cc:dd:ee", "192.168.83.10")
    rules = [line for line in added.splitlines() if line.startswith("add rule")]
    assert "ether saddr != 02:aa:bb:cc:dd:ee drop" in rules[0]
    assert "arp saddr ether != 02:aa:bb:cc:dd:ee drop" in rules[1]
    assert "arp saddr ip != { 192.168.83.10, 0.0.0.0 } drop" in rules[2]
    assert "ip saddr != 192.168.83.10 drop" in rules[3]
    assert rules[-1].endswith(" drop"), "anything else (a VLAN tag, another protocol) is dropped"
    assert '"wsc-1" : jump port-wsc-1' in added
    removed = guard.remove_port("wsc-1")
    assert "delete chain bridge wsfixture_guard port-wsc-1" in removed
    assert "hook prerouting" in guard.table()
