"""The one ASGI application ``wsfixture serve`` runs: E2B's control plane (REST, the API
key in ``X-API-KEY``) and envd (Connect RPC and ``/files``, for the sandbox named in
``E2b-Sandbox-Id`` with its access token) on one address, so that ``E2B_API_URL`` and
``E2B_SANDBOX_URL`` are the same URL.

Everything a request carries is read as hostile: JSON bodies are checked field by field
and answered with E2B's error shape (``{"code", "message"}``) naming the field; a missing
or wrong key is a 401 before anything else is looked at."""

from __future__ import annotations

import asyncio
import datetime
import email.parser
import email.policy
import hmac
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from e2b.envd.filesystem.filesystem_connect import FilesystemASGIApplication
from e2b.envd.process.process_connect import ProcessASGIApplication

from wsfixture.errors import ConfigError, WsfixtureError
from wsfixture.serve import envd
from wsfixture.serve.filesystem import MAX_FILE, FilesystemService, read_file, write_file
from wsfixture.serve.process import ProcessService
from wsfixture.serve.refusals import BadRequest, Conflict, NotFound, Refusal
from wsfixture.serve.sandboxes import DEFAULT_TIMEOUT, ENVD_VERSION, Sandbox, Sandboxes
from wsfixture.workspaces.commands import shell_line

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_BODY = MAX_FILE  # bytes a request body may carry: a file written
CLIENT_ID = "wsfixture"


class Server:
    """The ASGI callable: ``Server(sandboxes, api_key)``."""

    def __init__(self, sandboxes: Sandboxes, api_key: str) -> None:
        self.sandboxes = sandboxes
        self.api_key = api_key
        self.process = ProcessASGIApplication(ProcessService(sandboxes))  # type: ignore[arg-type]
        self.filesystem = FilesystemASGIApplication(FilesystemService(sandboxes))  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}  # fmt: skip
        path = scope["path"]
        if "e2b-sandbox-id" in headers:
            await self._envd(scope, receive, send, headers, path)
            return
        if not hmac.compare_digest(headers.get("x-api-key", "").encode(), self.api_key.encode()):
            await _json(send, 401, _error(401, "Invalid API key: X-API-KEY missing or wrong"))
            return
        try:
            status, body = await self._control(scope["method"], path, scope, receive)
        except Refusal as exc:
            status, body = exc.status, _error(exc.status, str(exc))
        except ConfigError as exc:  # a field wsfixture's own checks refused
            status, body = 400, _error(400, str(exc))
        except WsfixtureError as exc:
            status, body = 500, _error(500, str(exc))
        await _json(send, status, body)

    async def _envd(
        self, scope: Scope, receive: Receive, send: Send, headers: Mapping[str, str], path: str
    ) -> None:
        try:
            sandbox = envd.sandbox_of(self.sandboxes, headers)
        except NotFound as exc:
            # As E2B's edge answers for a sandbox that is not there: 502 with a message.
            await _json(send, 502, _error(502, f"The sandbox was not found: {exc}"))
            return
        except Refusal as exc:
            await _json(send, exc.status, _error(exc.status, str(exc)))
            return
        except PermissionError as exc:
            await _json(send, 401, _error(401, str(exc)))
            return
        if path.startswith("/process.Process/"):
            await self.process(scope, receive, send)
        elif path.startswith("/filesystem.Filesystem/"):
            await self.filesystem(scope, receive, send)
        elif path == "/health":
            await _reply(send, 204, b"", "text/plain")
        elif path == "/files":
            try:
                await self._files(scope, receive, send, sandbox, headers)
            except Refusal as exc:
                await _json(send, exc.status, _error(exc.status, str(exc)))
            except WsfixtureError as exc:
                await _json(send, 500, _error(500, str(exc)))
        else:
            await _json(send, 404, _error(404, f"{path}: not an envd route"))

    # -- the control plane ------------------------------------------------------------

    async def _control(
        self, method: str, path: str, scope: Scope, receive: Receive
    ) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["v2"]:  # E2B's v2 routes take and give the same as v1's here
            parts = parts[1:]
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode())
        if method == "POST" and parts == ["sandboxes"]:
            return 201, await self._create(_object(await _body(receive)))
        if method == "GET" and parts == ["sandboxes"]:
            states = {w for item in query.get("state", []) for w in item.split(",")}
            shown = [s for s in self.sandboxes.listed()
                     if _metadata_matches(s, query.get("metadata", []))
                     and (not states or _state(s) in states)]  # fmt: skip
            return 200, [self._listed(s) for s in shown]
        if len(parts) >= 2 and parts[0] == "sandboxes":
            sid, rest = parts[1], parts[2:]
            if method == "GET" and not rest:
                return 200, self._detail(self.sandboxes.get(sid))
            if method == "DELETE" and not rest:
                await asyncio.to_thread(self.sandboxes.kill, sid)
                return 204, None
            if method == "POST" and rest == ["timeout"]:
                body = _object(await _body(receive))
                self.sandboxes.set_timeout(sid, body.get("timeout", 0))
                return 204, None
            if method == "POST" and rest in (["connect"], ["resume"]):
                body = _object(await _body(receive))
                timeout = body.get("timeout", DEFAULT_TIMEOUT)
                resumed = await asyncio.to_thread(self.sandboxes.resume, sid, timeout)
                if not resumed and "timeout" in body:
                    self.sandboxes.set_timeout(sid, timeout)
                if rest == ["resume"] and not resumed:
                    raise Conflict(f"sandbox {sid} is not paused")
                return (201 if resumed else 200), self._created(self.sandboxes.get(sid))
            if method == "POST" and rest == ["pause"]:
                if not await asyncio.to_thread(self.sandboxes.pause, sid):
                    raise Conflict(f"sandbox {sid} is paused already")
                return 204, None
        raise NotFound(f"{method} {path}: not an E2B API route wsfixture serves")

    async def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        template = body.get("templateID")
        if not isinstance(template, str) or not template:
            raise BadRequest("templateID: missing; a template (a workspace of the config, "
                             "or base)")  # fmt: skip
        timeout = body.get("timeout", DEFAULT_TIMEOUT)
        metadata = _strings(body.get("metadata") or {}, "metadata")
        envs = _strings(body.get("envVars") or {}, "envVars")
        allow = body.get("allow_internet_access")  # E2B spells this one in snake case
        if allow is not None:
            if not isinstance(allow, bool):
                raise BadRequest(f"allow_internet_access: {allow!r} is not true or false")
            if template in self.sandboxes.templates() and allow != (
                has := self.sandboxes.reaches_internet(template)
            ):
                raise BadRequest(
                    f"allow_internet_access: {str(allow).lower()}, but template {template!r} "
                    f"{'reaches' if has else 'has no'} internet; the config decides (a "
                    "template with the access wanted, or leave it out)"
                )
        auto_pause = body.get("autoPause", False)
        if not isinstance(auto_pause, bool):
            raise BadRequest(f"autoPause: {auto_pause!r} is not true or false")
        for unserved in ("volumeMounts", "mcp", "iam", "network", "autoResume"):
            if body.get(unserved):
                raise BadRequest(f"{unserved}: not served by wsfixture (see its README)")
        shell_line("true", env=envs)  # ConfigError naming each bad variable name
        sandbox = await asyncio.to_thread(self.sandboxes.create, template, timeout,
                                          metadata, envs, auto_pause)  # fmt: skip
        return self._created(sandbox)

    def _created(self, sandbox: Sandbox) -> dict[str, Any]:
        return {
            "templateID": sandbox.template,
            "sandboxID": sandbox.id,
            "clientID": CLIENT_ID,
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": sandbox.access_token,
        }

    def _listed(self, sandbox: Sandbox) -> dict[str, Any]:
        spec = sandbox.workspace.spec
        return {
            "templateID": sandbox.template,
            "sandboxID": sandbox.id,
            "clientID": CLIENT_ID,
            "startedAt": _iso(sandbox.started_at),
            "endAt": _iso(sandbox.end_at),
            "cpuCount": spec.vcpu or 1,
            "memoryMB": spec.memory or 0,
            "diskSizeMB": spec.disk or 0,
            "state": _state(sandbox),
            "envdVersion": ENVD_VERSION,
            "metadata": sandbox.metadata,
        }

    def _detail(self, sandbox: Sandbox) -> dict[str, Any]:
        return {**self._listed(sandbox), "envdAccessToken": sandbox.access_token}

    # -- envd's /files ----------------------------------------------------------------

    async def _files(
        self, scope: Scope, receive: Receive, send: Send, sandbox: Sandbox,
        headers: Mapping[str, str],
    ) -> None:  # fmt: skip
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode())
        named = query.get("username", [None])[0]
        user = envd.user_of(headers) if named is None else envd.user_named(named)
        path = query.get("path", [None])[0]
        if scope["method"] == "GET":
            if not path:
                raise BadRequest("path: missing; the file to read")
            data = await asyncio.to_thread(read_file, sandbox, path, user)
            await _reply(send, 200, data, "application/octet-stream")
            return
        if scope["method"] != "POST":
            raise BadRequest(f"method: {scope['method']}; GET or POST")
        body = await _body(receive)
        kind = headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            files = _multipart(kind, body, path)
        elif path:
            files = [(path, body)]
        else:
            raise BadRequest("path: missing; where to write the file")
        written = []
        for target, data in files:
            await asyncio.to_thread(write_file, sandbox, target, data, user)
            written.append({"name": target.rsplit("/", 1)[-1], "type": "file", "path": target})
        await _json(send, 200, written)


def _multipart(kind: str, body: bytes, path: str | None) -> list[tuple[str, bytes]]:
    """The files of a multipart/form-data body: (path, bytes), the path from each part's
    filename (E2B's SDK names each part by its path) or the query's for a single one."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + kind.encode("latin-1") + b"\r\n\r\n" + body
    )
    files = []
    for part in message.iter_parts():
        name = part.get_filename() or path
        if not name:
            raise BadRequest("file: a part names no path")
        payload = part.get_payload(decode=True)
        files.append((name, payload if isinstance(payload, bytes) else b""))
    if not files:
        raise BadRequest("file: the form holds no file")
    return files


def _state(sandbox: Sandbox) -> str:
    return "paused" if sandbox.paused else "running"


def _metadata_matches(sandbox: Sandbox, wanted: list[str]) -> bool:
    for item in wanted:
        for key, value in urllib.parse.parse_qsl(item):
            if sandbox.metadata.get(key) != value:
                return False
    return True


def _strings(value: object, field: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadRequest(f"{field}: {value!r} is not a map of strings to strings")
    return value


def _object(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadRequest("body: not JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("body: not a JSON object")
    return value


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


async def _body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(f"body: over {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _json(send: Send, status: int, body: Any) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    await _reply(send, status, data, "application/json")


async def _reply(send: Send, status: int, data: bytes, kind: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind.encode()),
                            (b"content-length", str(len(data)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
