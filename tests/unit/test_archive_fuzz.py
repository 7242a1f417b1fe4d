"""The archive manifest and the registry's JSON, fuzzed (hypothesis, bounded): no input
makes the checks raise anything but a WsfixtureError, and no manifest they accept names
a file outside the staging directory, or outside its entry."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsfixture.errors import WsfixtureError
from wsfixture.image import archive, registry, store

STAGING = Path("/staging")
KEY = "trixie-container-0123456789abcdef"
REDIRECT = {"trusted.overlay.redirect": "2f"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Path-like strings made of the pieces an attacker would use.
pieces = st.sampled_from(["images", "templates", KEY, "..", ".", "", "root", "x", "/", "a/b"])
paths = st.lists(pieces, min_size=1, max_size=6).map("/".join)
keys = st.one_of(st.just(KEY), paths, st.text(max_size=30))
facts = st.fixed_dictionaries(
    {
        "type": st.sampled_from([stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, 0, "x"]),
        "mode": st.sampled_from([0o644, 0o4755, 0o2755, 0o777, -1, 0o10000]),
        "uid": st.sampled_from([0, 2**30, 2**30 + 5, -1, 2**32]),
        "gid": st.sampled_from([0, 2**30, 7]),
        "xattrs": st.sampled_from(
            [{}, {"security.capability": "00" * 24}, {"trusted.overlay.redirect": ""}]
        ),
    },
    optional={
        "size": st.integers(-1, 10),
        "link": st.text(max_size=5),
        "rdev": st.integers(0, 300),
    },
)
manifests = st.fixed_dictionaries(
    {
        "format": st.sampled_from([1, 1, 2, "1"]),
        "entries": st.lists(
            st.fixed_dictionaries(
                {"kind": st.sampled_from(["image", "template", "x"]), "key": keys}
            ),
            max_size=3,
        ),
        "files": st.dictionaries(paths, facts, max_size=6),
    },
)


def within(path: Path, top: Path) -> bool:
    return os.path.normpath(path).startswith(f"{top}/")


def check_accepted(manifest: archive.Manifest) -> None:
    for entry in manifest.entries:
        assert store.valid_key(entry.key)
        assert within(STAGING / entry.relative, STAGING)
    tops = {str(e.relative) for e in manifest.entries}
    for path in manifest.files:
        resolved = STAGING / path
        assert within(resolved, STAGING)
        assert os.path.normpath(resolved) == str(resolved)  # nothing to resolve: no "..", "."
        assert any(path == top or path.startswith(f"{top}/") for top in tops)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests)
def test_a_structured_manifest_is_accepted_only_when_it_stays_inside(doc: dict[str, Any]) -> None:
    try:
        manifest = archive.parse_manifest(json.dumps(doc).encode(), "fuzz")
    except WsfixtureError:
        return
    check_accepted(manifest)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)))
def test_any_bytes_as_a_manifest_raise_only_transfer_errors(data: bytes) -> None:
    with contextlib.suppress(archive.TransferError):
        check_accepted(archive.parse_manifest(data, "fuzz"))


def test_the_honest_manifest_and_its_guards() -> None:
    """The positive control: the shape an export writes is accepted; each single change
    an attacker would make to it is refused."""
    top = f"images/{KEY}"
    tree = {"type": stat.S_IFDIR, "mode": 0o755, "uid": 2**30, "gid": 2**30, "xattrs": {}}
    files = {top: {**tree, "uid": 0, "gid": 0, "mode": 0o700}, f"{top}/root": tree,
             f"{top}/root/su": {**tree, "type": stat.S_IFREG, "mode": 0o4755, "size": 1,
                                "sha256": "0" * 64}}  # fmt: skip
    doc = {"format": 1, "entries": [{"kind": "image", "key": KEY}], "files": files}
    check_accepted(archive.parse_manifest(json.dumps(doc).encode(), "honest"))
    su = files[f"{top}/root/su"]
    for change in (
        {"entries": [{"kind": "image", "key": f"{KEY}/../x"}]},
        {"files": {**files, f"{top}/../../x": tree}},
        {"files": {**files, f"{top}/root/su": {**su, "uid": 0}}},
        {"files": {**files, f"{top}/root/dev": {**tree, "type": stat.S_IFCHR, "rdev": 267}}},
        {"files": {**files, f"{top}/ready": {**su, "uid": 0, "gid": 0}}},
        {"files": {**files, f"{top}/root/su": {**su, "xattrs": REDIRECT}}},
    ):
        try:
            archive.parse_manifest(json.dumps({**doc, **change}).encode(), "changed")
        except archive.TransferError:
            continue
        raise AssertionError(f"accepted: {change}")


def test_a_vm_image_tree_holds_no_setid_bit_nor_capability() -> None:
    """A VM image's tree is owned as its guest owns it: a setgid ``shadow`` file there is
    the host's shadow group too. Its privileged files travel in its disk and setid.json
    (``image.setid``); the same file without the bit, and that list, are accepted."""
    top = "images/trixie-vm-0123456789abcdef"
    tree = {"type": stat.S_IFDIR, "mode": 0o755, "uid": 0, "gid": 0, "xattrs": {}}
    chage = {**tree, "type": stat.S_IFREG, "mode": 0o755, "gid": 42, "size": 1,
             "sha256": "0" * 64}  # fmt: skip
    files = {top: {**tree, "mode": 0o700}, f"{top}/root": tree, f"{top}/root/chage": chage,
             f"{top}/setid.json": {**chage, "gid": 0, "mode": 0o644}}  # fmt: skip
    doc = {"format": 1, "entries": [{"kind": "image", "key": top[7:]}], "files": files}
    check_accepted(archive.parse_manifest(json.dumps(doc).encode(), "honest"))
    mail = {**tree, "mode": 0o2775, "gid": 8}  # a setgid directory: its group for new files
    with_mail = {**doc, "files": {**files, f"{top}/root/mail": mail}}
    check_accepted(archive.parse_manifest(json.dumps(with_mail).encode(), "honest"))
    caps = {"security.capability": "0100000200200000" + "00" * 12}
    for changed, refused in (
        ({**chage, "mode": 0o2755}, "setuid or setgid in a VM image"),
        ({**chage, "mode": 0o4755, "uid": 1000}, "setuid or setgid in a VM image"),
        ({**chage, "mode": 0o4755, "uid": 0}, "setuid or setgid in a VM image"),
        ({**chage, "xattrs": caps}, "a file capability"),
    ):
        bad = {**doc, "files": {**files, f"{top}/root/chage": changed}}
        with pytest.raises(archive.TransferError, match=refused):
            archive.parse_manifest(json.dumps(bad).encode(), "changed")


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_registry_answers_raise_only_registry_errors(value: Any) -> None:
    data = json.dumps(value).encode()
    try:
        document = registry.json_object(data, "fuzz", 1 << 20)
        for field in ("config", "layers"):
            digest, size = registry.descriptor(document, field, "fuzz")
            assert registry.DIGEST.match(digest)
            assert size >= 0
    except registry.RegistryError:
        pass


members = st.lists(
    st.tuples(paths, st.sampled_from(["file", "dir", "sym", "lnk", "chr", "fifo"]), paths),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(members)
def test_members_are_accepted_only_inside_and_never_under_a_link(listed: list[Any]) -> None:
    """Tar members of any name, type and link target, listed in a manifest whatever they
    are: what ``check_members`` accepts lies inside its entry and under no link."""
    import tarfile

    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
             "lnk": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}  # fmt: skip
    types = {"file": stat.S_IFREG, "lnk": stat.S_IFREG, "dir": stat.S_IFDIR,
             "sym": stat.S_IFLNK, "chr": stat.S_IFCHR, "fifo": stat.S_IFIFO}  # fmt: skip
    infos = []
    for name, kind, link in listed:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kinds[kind], link
        infos.append(info)
    files = {
        i.name: {"type": types[k], "link": link}
        for i, (_, k, link) in zip(infos, listed, strict=True)
    }
    manifest = archive.Manifest([archive.Entry("image", KEY)], files)
    try:
        archive.check_members(infos, manifest, "fuzz")
    except WsfixtureError:
        return
    links = {i.name for i in infos if i.issym() or i.islnk()}
    for info in infos:
        parts = info.name.split("/")
        assert not any(part in ("", ".", "..") for part in parts), info.name
        assert info.name == f"images/{KEY}" or info.name.startswith(f"images/{KEY}/")
        assert not any("/".join(parts[:n]) in links for n in range(1, len(parts)))
        assert not (info.ischr() and (info.devmajor or info.devminor))
        assert info.type != tarfile.FIFOTYPE
