"""What the two envd services share: which sandbox a call is for (the ``E2b-Sandbox-Id``
header, checked with the sandbox's access token, ``X-Access-Token``, before anything
runs), which user it runs as (``Authorization: Basic user:``; E2B's ``user`` is the
workspace's own user), and E2B's error for what went wrong."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from typing import Any, Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from wsfixture.errors import ConfigError, WsfixtureError
from wsfixture.serve.refusals import BadRequest, NotFound, Paused, Refusal
from wsfixture.serve.sandboxes import Sandbox, Sandboxes

E2B_DEFAULT_USER = "user"  # E2B's name for the sandbox's own user
START: Literal["start"] = "start"  # the oneof fields, typed as the generated code wants


def user_of(headers: Mapping[str, str]) -> str | None:
    """The user a call runs as: None for the workspace's own (E2B's ``user``, or none
    named), else the name (``root`` too)."""
    value = headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        name = base64.b64decode(value[6:]).decode().split(":", 1)[0]
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"Authorization: {value!r} is not Basic base64(user:)") from None
    return user_named(name)


def user_named(name: str) -> str | None:
    """The user E2B's ``name`` is: None for the workspace's own (``user``, or none)."""
    return None if name in ("", E2B_DEFAULT_USER) else name


def sandbox_of(sandboxes: Sandboxes, headers: Mapping[str, str]) -> Sandbox:
    """The sandbox the call names, if the caller holds its access token."""
    sandbox = sandboxes.get(headers.get("e2b-sandbox-id", ""))
    if not _same(headers.get("x-access-token", ""), sandbox.access_token):
        raise PermissionError("X-Access-Token: missing or not this sandbox's")
    if sandbox.paused:
        raise Paused(f"sandbox {sandbox.id} is paused: Sandbox.connect resumes it")
    return sandbox


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def connect_error(exc: BaseException) -> ConnectError:
    """E2B's error for what went wrong: not found, invalid argument, unauthenticated."""
    if isinstance(exc, ConnectError):
        return exc
    if isinstance(exc, NotFound):
        return ConnectError(Code.NOT_FOUND, str(exc))
    if isinstance(exc, BadRequest):
        return ConnectError(Code.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, PermissionError):
        return ConnectError(Code.UNAUTHENTICATED, str(exc))
    if isinstance(exc, Paused):
        return ConnectError(Code.UNAVAILABLE, str(exc))
    if isinstance(exc, ConfigError):  # a field wsfixture's own checks refused
        return ConnectError(Code.INVALID_ARGUMENT, str(exc))
    return ConnectError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")


Context = RequestContext[Any, Any]  # the request's headers are all a service reads of it


def headers_of(ctx: Context) -> dict[str, str]:
    """The request's headers, names in lower case."""
    return {key.lower(): value for key, value in ctx.request_headers.items()}


def caller(sandboxes: Sandboxes, ctx: Context) -> tuple[Sandbox, str | None]:
    """The sandbox a Connect call is for, and the user it runs as; E2B's error if the
    call may not (no such sandbox, another's token, a paused one, a bad user header)."""
    try:
        headers = headers_of(ctx)
        return sandbox_of(sandboxes, headers), user_of(headers)
    except (WsfixtureError, Refusal, PermissionError) as exc:
        raise connect_error(exc) from None
