"""An OCI registry client, over the distribution API directly (no client library: what is
needed is five requests, and the stream of a large blob is hashed as it is read).

``REF`` is ``HOST[:PORT]/NAME[/NAME...][:TAG]``, such as
``registry.example:5000/team/wsfixture-images:trixie``. A registry on 127.0.0.1 or
localhost is spoken to over HTTP, any other over HTTPS. Credentials come from the Docker
config file (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``: its ``auths``
entry for the host) or the environment (``WSFIXTURE_REGISTRY_USERNAME`` and
``WSFIXTURE_REGISTRY_PASSWORD``), never from the command line; Basic and Bearer (token)
challenges are answered.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from wsfixture.errors import WsfixtureError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CHUNK = 1 << 20
MANIFEST_LIMIT = 4 << 20  # the distribution spec's own limit for a manifest
TIMEOUT = 60.0
# HOST[:PORT]/NAME[/NAME...][:TAG]: the distribution spec's name and tag grammar.
REFERENCE = re.compile(
    r"(?P<host>[A-Za-z0-9.-]+(?::[0-9]+)?)/"
    r"(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?\Z"
)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


class RegistryError(WsfixtureError):
    """A registry refused, failed, or answered with what does not check out."""


class RegistryUnreachableError(RegistryError):
    """The registry could not be reached at all (no connection)."""


@dataclass(frozen=True)
class Reference:
    host: str  # "registry.example:5000"
    name: str  # "team/wsfixture-images"
    tag: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        match = REFERENCE.match(text)
        if not match:
            raise RegistryError(
                f"image cache reference {text!r} is malformed; allowed: "
                "HOST[:PORT]/NAME[/NAME...][:TAG], such as registry.example:5000/team/images:v1"
            )
        return cls(match["host"], match["name"], match["tag"])

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.host, self.name, tag)

    @property
    def secure(self) -> bool:
        return self.host.rsplit(":", 1)[0] not in LOCAL_HOSTS

    def __str__(self) -> str:
        return f"{self.host}/{self.name}" + (f":{self.tag}" if self.tag else "")


def credentials(host: str, environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(user, password) for ``host``: the environment's, else the Docker config file's."""
    env = os.environ if environ is None else environ
    user, password = env.get("WSFIXTURE_REGISTRY_USERNAME"), env.get("WSFIXTURE_REGISTRY_PASSWORD")
    if user and password:
        return user, password
    config_dir = Path(env.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        auths = json.loads((config_dir / "config.json").read_text()).get("auths", {})
    except (OSError, ValueError):
        return None
    for key in (host, f"https://{host}", f"http://{host}"):
        encoded = auths.get(key, {}).get("auth")
        if encoded:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
            return user, password
    return None


class Registry:
    """One repository of one registry."""

    def __init__(self, ref: Reference, creds: tuple[str, str] | None = None) -> None:
        self.ref = ref
        self.creds = creds if creds is not None else credentials(ref.host)
        self.authorization: str | None = None

    # -- the protocol ----------------------------------------------------------------------

    def _connection(self, host: str) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.ref.secure else http.client.HTTPConnection
        return kind(host, timeout=TIMEOUT)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None,
        body: bytes | BinaryIO | None = None, ok: tuple[int, ...] = (200,),
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:  # fmt: skip
        """One request, authorised (after one challenge); the open response, whose
        connection the caller closes. RegistryError for a status not in ``ok``."""
        url = self._own_url(path)
        for attempt in (1, 2):
            conn = self._connection(self.ref.host)
            sent = dict(headers or {})
            if self.authorization:
                sent["Authorization"] = self.authorization
            try:
                if hasattr(body, "seek"):
                    body.seek(0)  # type: ignore[union-attr]
                conn.request(method, url.path + (f"?{url.query}" if url.query else ""),
                             body=body, headers=sent)  # fmt: skip
                response = conn.getresponse()
            except OSError as exc:
                conn.close()
                raise RegistryUnreachableError(
                    f"registry {self.ref.host} unreachable: {exc}"
                ) from None
            if response.status == 401 and attempt == 1:
                challenge = response.getheader("WWW-Authenticate", "")
                response.read()
                conn.close()
                self.authorization = self._answer(challenge)
                continue
            if response.status not in ok:
                said = response.read(2000).decode(errors="replace").strip()
                conn.close()
                raise RegistryError(self._status_message(method, path, response.status, said))
            return response, conn
        raise AssertionError("unreachable")

    def _own_url(self, path: str) -> urllib.parse.SplitResult:
        """``path`` (a path, or a URL the registry named, such as an upload's ``Location``)
        if it is on the registry's own host and scheme: the credentials go nowhere else."""
        url = urllib.parse.urlsplit(path)
        scheme = "https" if self.ref.secure else "http"
        if (url.netloc or url.scheme) and (url.netloc != self.ref.host or url.scheme != scheme):
            raise RegistryError(
                f"registry {self.ref.host} sent us to {scheme_host(url)}: refused (requests, "
                "and the credentials with them, go to the registry's own host only)"
            )
        return url

    def _status_message(self, method: str, path: str, status: int, said: str) -> str:
        where = f"registry {self.ref.host}: {method} {urllib.parse.urlsplit(path).path}"
        if status == 401:
            return (f"{where}: 401 unauthorized; give credentials in ~/.docker/config.json "
                    "(`docker login`) or WSFIXTURE_REGISTRY_USERNAME/PASSWORD")  # fmt: skip
        if status == 404:
            return f"{where}: 404 not found"
        return f"{where}: {status} ({said[:300] or 'no reason given'})"

    def _answer(self, challenge: str) -> str:
        """The Authorization header for a 401's challenge: Basic, or a Bearer token got
        from the realm with the credentials."""
        if self.creds is None:
            raise RegistryError(
                f"registry {self.ref.host} asks for credentials and none were found "
                "(~/.docker/config.json, or WSFIXTURE_REGISTRY_USERNAME/PASSWORD)"
            )
        basic = "Basic " + base64.b64encode(":".join(self.creds).encode()).decode()
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() != "bearer":
            return basic
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        query = urllib.parse.urlencode({k: v for k, v in fields.items() if k != "realm"})
        realm = urllib.parse.urlsplit(fields.get("realm", ""))
        conn = (http.client.HTTPSConnection if realm.scheme == "https"
                else http.client.HTTPConnection)(realm.netloc, timeout=TIMEOUT)  # fmt: skip
        try:
            conn.request("GET", f"{realm.path}?{query}", headers={"Authorization": basic})
            response = conn.getresponse()
            data = json.loads(response.read() or b"{}")
        except (OSError, ValueError) as exc:
            raise RegistryError(f"registry {self.ref.host}: its token service: {exc}") from None
        finally:
            conn.close()
        token = data.get("token") or data.get("access_token")
        if response.status != 200 or not token:
            raise RegistryError(f"registry {self.ref.host}: no token ({response.status})")
        return f"Bearer {token}"

    def _path(self, kind: str, what: str) -> str:
        return f"/v2/{self.ref.name}/{kind}/{what}"

    # -- what wsfixture asks -----------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        response, conn = self.request("HEAD", self._path("blobs", digest), ok=(200, 404))
        conn.close()
        return response.status == 200

    def push_blob(self, stream: BinaryIO, digest: str, size: int) -> None:
        """Upload a blob (one PUT), unless the registry has it."""
        if self.has_blob(digest):
            return
        response, conn = self.request("POST", self._path("blobs", "uploads/"), ok=(202,))
        location = response.getheader("Location", "")
        conn.close()
        joiner = "&" if "?" in location else "?"
        url = f"{location}{joiner}digest={urllib.parse.quote(digest)}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        _, conn = self.request("PUT", url, headers, stream, ok=(201,))
        conn.close()

    def put_manifest(self, tag: str, manifest: dict[str, Any]) -> str:
        """Store a manifest (or an index) under ``tag``; its digest."""
        data = json.dumps(manifest, sort_keys=True).encode()
        headers = {"Content-Type": manifest["mediaType"]}
        _, conn = self.request("PUT", self._path("manifests", tag), headers, data, ok=(201,))
        conn.close()
        return f"sha256:{hashlib.sha256(data).hexdigest()}"

    def get_manifest(self, tag: str) -> dict[str, Any] | None:
        """The manifest under ``tag``; None if the registry has none."""
        headers = {"Accept": f"{MANIFEST_TYPE}, {INDEX_TYPE}"}
        response, conn = self.request("GET", self._path("manifests", tag), headers, ok=(200, 404))
        try:
            if response.status == 404:
                return None
            data = response.read(MANIFEST_LIMIT + 1)
        finally:
            conn.close()
        return json_object(data, f"registry {self.ref.host}: manifest {tag!r}", MANIFEST_LIMIT)

    def fetch_blob(self, digest: str, size: int, target: Path) -> None:
        """Download a blob of ``size`` bytes (its descriptor's) into ``target``, hashed as
        it comes: RegistryError (and no file) as soon as more arrives than ``size``, or if
        what came is not what ``digest`` names."""
        response, conn = self.request("GET", self._path("blobs", check_digest(digest)))
        hasher, got = hashlib.sha256(), 0
        try:
            with open(target, "wb") as out:
                for chunk in _chunks(response):
                    got += len(chunk)
                    if got > size:
                        raise RegistryError(
                            f"registry {self.ref.host}: blob {digest} is over the {size} bytes "
                            "its descriptor says: refused"
                        )
                    hasher.update(chunk)
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        finally:
            conn.close()
        arrived = f"sha256:{hasher.hexdigest()}"
        if arrived != digest or got != size:
            target.unlink(missing_ok=True)
            raise RegistryError(
                f"registry {self.ref.host}: blob {digest} arrived as {arrived} ({got} of {size} "
                "bytes): refused (changed in the registry's storage, or in transit)"
            )

    def blob_bytes(self, digest: str, limit: int = 1 << 20) -> bytes:
        """A small blob (a config), checked against its digest."""
        response, conn = self.request("GET", self._path("blobs", check_digest(digest)))
        try:
            data = response.read(limit + 1)
        finally:
            conn.close()
        if len(data) > limit or f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            raise RegistryError(f"registry {self.ref.host}: blob {digest} does not match it")
        return data


def json_object(data: bytes, what: str, limit: int) -> dict[str, Any]:
    """A JSON object a registry sent, or RegistryError saying what it was instead."""
    if len(data) > limit:
        raise RegistryError(f"{what}: over {limit} bytes")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"{what}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise RegistryError(f"{what}: not a JSON object")
    return document


def descriptor(document: dict[str, Any], field: str, what: str) -> tuple[str, int]:
    """(digest, size) of a manifest's ``config`` or single layer, checked."""
    value = document.get(field)
    if field == "layers":
        value = value[0] if isinstance(value, list) and len(value) == 1 else None
    if not isinstance(value, dict):
        raise RegistryError(f"{what}: {field} is not one descriptor")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"{what}: {field}'s size {size!r:.40} is not a byte count")
    return check_digest(value.get("digest")), size


def check_digest(digest: object) -> str:
    """A digest from a registry's JSON, before it goes into a path: ``sha256:`` and 64
    hex digits, or RegistryError."""
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise RegistryError(f"digest {digest!r:.100} is not sha256:<64 hex digits>")
    return digest


def scheme_host(url: urllib.parse.SplitResult) -> str:
    return f"{url.scheme}://{url.netloc}" if url.scheme else url.netloc


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while chunk := response.read(CHUNK):
        yield chunk


def describe(stream: BinaryIO) -> tuple[str, int]:
    """(digest, size) of what ``stream`` holds."""
    stream.seek(0)
    hasher, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    stream.seek(0)
    return f"sha256:{hasher.hexdigest()}", size
