"""Hostile input for the trust-boundary tests: export archives written member by member
(whatever names, links, owners, modes and manifest an attacker would choose), and a
registry that serves what it is told to (crafted manifests, indexes and blobs, an upload
``Location`` on another host) and records every request it is sent."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.registry import serving
from wsfixture.image.archive import FORMAT, MANIFEST

CONTAINER_ROOT = 2**30


@dataclass
class Member:
    """One member of a crafted archive."""

    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, chr, fifo
    data: bytes = b""
    link: str = ""  # a symlink's target, a hard link's member
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)

    def info(self) -> tarfile.TarInfo:
        info = tarfile.TarInfo(self.name)
        info.mode, info.uid, info.gid = self.mode, self.uid, self.gid
        info.type = {
            "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
            "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
        }[self.kind]  # fmt: skip
        info.linkname = self.link
        info.devmajor, info.devminor = self.rdev
        info.size = len(self.data) if self.kind == "file" else 0
        return info

    def fact(self) -> dict[str, Any]:
        """What an honest manifest says of it (as ``transfer.facts_of`` reads it)."""
        kinds = {"file": stat.S_IFREG, "hardlink": stat.S_IFREG, "dir": stat.S_IFDIR,
                 "symlink": stat.S_IFLNK, "chr": stat.S_IFCHR, "fifo": stat.S_IFIFO}  # fmt: skip
        fact: dict[str, Any] = {"type": kinds[self.kind], "mode": self.mode, "uid": self.uid,
                                "gid": self.gid, "xattrs": {}}  # fmt: skip
        if self.kind in ("file", "hardlink"):
            fact["size"] = len(self.data)
            fact["sha256"] = hashlib.sha256(self.data).hexdigest()
        elif self.kind == "symlink":
            fact["link"] = self.link
        elif self.kind == "chr":
            fact["rdev"] = (self.rdev[0] << 8) | self.rdev[1]
        return fact


def write_archive(
    path: Path,
    entries: list[dict[str, Any]],
    members: list[Member],
    files: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """An export archive: the manifest (``files`` as given, else what the members honestly
    are; a hard link's facts are its target's), then the members in order."""
    if files is None:
        by_name = {m.name: m for m in members}
        files = {m.name: (by_name[m.link] if m.kind == "hardlink" else m).fact() for m in members}
    manifest = json.dumps({"format": FORMAT, "entries": entries, "files": files}).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for member in members:
            tar.addfile(member.info(), io.BytesIO(member.data) if member.kind == "file" else None)
    return path


def honest_image(key: str, uid: int = CONTAINER_ROOT) -> list[Member]:
    """A small container image entry as a cache holds one: its stamps root's, its tree
    the containers' root's (a setuid binary of the guest's included)."""
    top = f"images/{key}"
    return [
        Member(top, "dir", mode=0o700),
        Member(f"{top}/ready", data=b"1.0\n"),
        Member(f"{top}/recipe.json", data=b"{}"),
        Member(f"{top}/root", "dir", mode=0o755, uid=uid, gid=uid),
        Member(f"{top}/root/bin", "dir", mode=0o755, uid=uid, gid=uid),
        Member(f"{top}/root/bin/su", data=b"#!/bin/sh\n", mode=0o4755, uid=uid, gid=uid),
        Member(f"{top}/root/bin/sh", "symlink", link="/usr/bin/dash", mode=0o777, uid=uid, gid=uid),
        Member(
            f"{top}/root/bin/su2",
            "hardlink",
            link=f"{top}/root/bin/su",
            mode=0o4755,
            uid=uid,
            gid=uid,
        ),
        Member(f"{top}/root/gone", "chr", mode=0o000),  # a whiteout: overlayfs makes it as root
    ]


# -- a registry that serves what it is told ----------------------------------------------


@dataclass
class Crafted:
    """What the hostile registry serves: manifests by tag, blobs by digest (a blob may be
    served as other bytes than its digest names), and where an upload is sent."""

    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    upload_location: str = "/v2/upload/1"
    challenge: str | None = None  # a WWW-Authenticate to answer every unauthorised call with
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def blob(self, data: bytes) -> dict[str, Any]:
        """Store ``data``; its descriptor."""
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        self.blobs[digest] = data
        return {"mediaType": "application/octet-stream", "digest": digest, "size": len(data)}


@contextlib.contextmanager
def hostile_registry(crafted: Crafted) -> Iterator[str]:
    """A registry on 127.0.0.1 serving ``crafted``; its "127.0.0.1:PORT"."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _record(self) -> bool:
            crafted.requests.append((self.command, self.path, dict(self.headers)))
            if crafted.challenge and "Authorization" not in self.headers:
                self.send_response(401)
                self.send_header("WWW-Authenticate", crafted.challenge)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False
            return True

        def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            if not self._record():
                return
            parts = self.path.split("?")[0].split("/")
            if "manifests" in parts:
                manifest = crafted.manifests.get(parts[-1])
                if manifest is None:
                    self._send(404)
                else:
                    kind = manifest.get("mediaType", "application/json")
                    self._send(200, json.dumps(manifest).encode(), Content_Type=kind)
            elif "blobs" in parts and parts[-1] in crafted.blobs:
                self._send(200, crafted.blobs[parts[-1]])
            else:
                self._send(404)

        do_HEAD = do_GET

        def do_POST(self) -> None:
            if self._record():
                self._send(202, Location=crafted.upload_location)

        def do_PUT(self) -> None:
            if self._record():
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                self._send(201)

    with serving(Handler) as address:
        yield address
