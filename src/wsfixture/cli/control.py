"""A CLI workspace's control socket: how ``wsfixture checkpoint``, ``rollback`` and
``checkpoints`` reach the supervisor, which alone holds the machine.

The socket is ``control.sock`` in the workspace's runtime directory (root's, 0700). A
request is one JSON line (``verb`` and its arguments), the answer one JSON line: ``ok``
and a ``result``, or an ``error`` the client raises as a CheckpointError. The supervisor
serves one request at a time, under the lock its watch loop also takes: a rollback's
moment without a machine is not a workspace gone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from wsfixture.cli.persistent import publish
from wsfixture.errors import CheckpointError, WsfixtureError
from wsfixture.host import settings
from wsfixture.workspaces import Workspace

SOCKET = "control.sock"
REQUEST_TIMEOUT = 600.0  # a rollback of a VM under TCG with others about, at most
VERBS = ("checkpoint", "rollback", "checkpoints", "delete", "pause", "resume")
REQUEST_LIMIT = 1 << 16

logger = logging.getLogger("wsfixture.cli")


def socket_path(lab: str, name: str) -> Path:
    return settings.current().labs_dir / lab / name / SOCKET


def parse_request(line: bytes) -> dict[str, Any] | str:
    """One request line as a request (a JSON object whose ``tag``, if any, is text), or
    what is wrong with it: a client is any local root process, and is read as such."""
    if len(line) > REQUEST_LIMIT:
        return f"a request is one line of at most {REQUEST_LIMIT} bytes"
    try:
        request = json.loads(line or b"{}")
    except (ValueError, RecursionError) as exc:
        return f"a request is one JSON object ({exc})"
    if not isinstance(request, dict):
        return f"a request is one JSON object, not {type(request).__name__}"
    if not isinstance(request.get("tag", ""), str | None):
        return f"tag: text, not {request['tag']!r:.40}"
    return request


def handle(ws: Workspace, request: dict[str, Any]) -> dict[str, Any]:
    """Do what one request asks of ``ws``; the answer to send."""
    verb, tag = request.get("verb"), request.get("tag")
    started = time.monotonic()
    try:
        if verb == "checkpoint":
            made = ws.checkpoint(tag)
            result: Any = made.summary(ws._checkpointing.store.size(made))
        elif verb == "rollback":
            ws.rollback(str(tag))
            result = {"tag": tag}
        elif verb == "delete":
            ws.delete_checkpoint(str(tag))
            result = {"tag": tag}
        elif verb == "checkpoints":
            store = ws._checkpointing.store
            result = [c.summary(store.size(c)) for c in store.listed()]
        elif verb in ("pause", "resume"):
            ws.pause() if verb == "pause" else ws.resume()
            result = {"paused": ws.paused}
            if ws._supervisor is not None:  # `exec`, `ssh` and `cp` read it there
                ws._supervisor = dataclasses.replace(ws._supervisor, paused=ws.paused)
                publish(ws.lab.name, ws.name, ws._supervisor)
        else:
            return {"ok": False, "error": f"unknown request {verb!r}; known: {', '.join(VERBS)}"}
    except WsfixtureError as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        ws._drop_session()  # the supervisor holds no user's session
    return {"ok": True, "result": result, "seconds": round(time.monotonic() - started, 2)}


def serve(ws: Workspace, lock: threading.Lock, stop: threading.Event) -> threading.Thread:
    """Answer requests on ``ws``'s control socket in a thread, until ``stop`` is set."""
    path = socket_path(ws.lab.name, ws.name)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    listener.settimeout(1.0)

    def loop() -> None:
        with listener:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn, conn.makefile("rwb") as stream:
                    try:
                        request = parse_request(stream.readline(REQUEST_LIMIT + 1))
                        if isinstance(request, str):
                            answer = {"ok": False, "error": request}
                        else:
                            with lock:
                                answer = handle(ws, request)
                    except Exception as exc:  # the supervisor goes on; the client hears why
                        logger.exception("control request failed")
                        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    stream.write(json.dumps(answer).encode() + b"\n")
                    stream.flush()

    thread = threading.Thread(target=loop, name="control", daemon=True)
    thread.start()
    return thread


def request(lab: str, name: str, verb: str, **arguments: Any) -> dict[str, Any]:
    """Ask the supervisor of CLI workspace ``name``; its answer, or CheckpointError."""
    path = socket_path(lab, name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(REQUEST_TIMEOUT)
        try:
            conn.connect(str(path))
        except OSError as exc:
            raise CheckpointError(name, f"its supervisor does not answer at {path} ({exc})",
                                  "it may have been started by an older wsfixture: "
                                  "`wsfixture restart` it") from None  # fmt: skip
        with conn.makefile("rwb") as stream:
            stream.write(json.dumps({"verb": verb, **arguments}).encode() + b"\n")
            stream.flush()
            line = stream.readline()
    answer: dict[str, Any] = json.loads(line) if line else {"ok": False, "error": "no answer"}
    if not answer.get("ok"):
        raise CheckpointError(name, str(answer.get("error")).removeprefix(f"workspace {name!r}: "))
    return answer
