"""``wsfixture mcp``: an MCP server on stdio (the official ``mcp`` SDK) whose tools are the
CLI's verbs over the config's workspaces: list, start, stop and describe them, run a
command, read and write a file, checkpoint and roll back, and what an allowlist refused.

The workspaces are the config's own, run by their supervisors as ``wsfixture up`` runs
them (they outlive the server); a tool's failure is an MCP tool error whose text names
what went wrong, never a crash of the server."""

from __future__ import annotations

import functools
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from wsfixture.api import connect
from wsfixture.cli.lookup import select
from wsfixture.cli.persistent import (
    remove_lab_if_idle,
    start_workspace,
    status_rows,
    stop_supervised,
)
from wsfixture.errors import WsfixtureError
from wsfixture.host import ledger
from wsfixture.model.config import Config
from wsfixture.workspaces import Workspace

F = TypeVar("F", bound=Callable[..., Any])
MAX_READ = 1024 * 1024  # bytes a read_file returns: an agent's context is not a disk
COMMAND_TIMEOUT = 600  # seconds an exec may take unless it asks for less


class Refused(Exception):
    """What a tool could not do, told to the model as a tool error."""


def build(config: Config) -> MCPServer[Any]:
    """The server, its tools bound to ``config``."""
    server: MCPServer[Any] = MCPServer(
        "wsfixture",
        instructions="Sandboxed workspaces (containers and VMs) of one wsfixture config: "
        "start one with workspace_up, run commands in it with exec, checkpoint it before "
        "something risky and roll back after.",
    )

    def tool(name: str | None = None) -> Callable[[F], F]:
        """``server.tool``, with wsfixture's errors told to the model as tool errors
        (their text names the field, the value and what is allowed)."""

        def register(fn: F) -> F:
            @functools.wraps(fn)
            def told(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except (WsfixtureError, Refused) as exc:
                    raise ToolError(str(exc)) from None

            server.tool(name=name)(told)
            return fn

        return register

    def known(name: str) -> None:
        """UsageError naming the config's workspaces for a name it has not."""
        select(config, [name], True, lambda n: True)

    def running(name: str) -> Workspace:
        known(name)
        return connect(name, config)

    @tool()
    def workspaces_list() -> dict[str, list[dict[str, Any]]]:
        """Every workspace of the config: name, type, address, running or stopped."""
        return {"workspaces": [{k: row[k] for k in ("name", "type", "ip", "state", "uptime")}
                               for row in status_rows(config)]}  # fmt: skip

    @tool()
    def workspace_status(name: str) -> dict[str, Any]:
        """One workspace: its state, uptime, limits, and whether it runs as configured."""
        known(name)
        return next(row for row in status_rows(config) if row["name"] == name)

    @tool()
    def workspace_up(name: str) -> str:
        """Start a workspace of the config (it runs until workspace_down)."""
        known(name)
        if name in ledger.workspaces(config.network.namespace, live=True):
            return f"{name}: already running"
        ok, detail = start_workspace(config, name)
        if not ok:
            raise Refused(f"{name}: failed to start: {detail}")
        return f"{name}: {detail}"

    @tool()
    def workspace_down(name: str) -> str:
        """Stop a running workspace (its state directory is kept)."""
        known(name)
        lab = config.network.namespace
        record = ledger.workspaces(lab, live=True).get(name)
        if record is None:
            return f"{name}: not running"
        stop_supervised(record)
        remove_lab_if_idle(lab)
        return f"{name}: stopped"

    @tool(name="exec")
    def run_command(
        name: str, command: str, cwd: str | None = None, user: str | None = None,
        timeout: int = COMMAND_TIMEOUT,
    ) -> dict[str, Any]:  # fmt: skip
        """Run a shell command in a running workspace as its user (or `user`, root too);
        its exit status, stdout and stderr."""
        with running(name) as ws:
            rc, out, err = ws.run(command, timeout=min(timeout, COMMAND_TIMEOUT), cwd=cwd,
                                  user=user)  # fmt: skip
        return {"exit_code": rc, "stdout": out, "stderr": err}

    @tool()
    def read_file(name: str, path: str) -> str:
        """A text file of a running workspace (up to 1 MiB), read as its user."""
        with running(name) as ws:
            rc, out, err = ws.run(f"head -c {MAX_READ} -- {shlex.quote(path)}")
        if rc != 0:
            raise Refused(f"{path}: {err.strip()}")
        return out

    @tool()
    def write_file(name: str, path: str, content: str) -> str:
        """Write a text file in a running workspace as its user (its directory made)."""
        data = content.encode()
        with running(name) as ws, tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "content"
            local.write_bytes(data)
            rc, _, err = ws.run(f'mkdir -p -- "$(dirname -- {shlex.quote(path)})"')
            if rc != 0:
                raise Refused(f"{path}: {err.strip()}")
            ws.put(local, path)
        return f"{path}: {len(data)} bytes written"

    @tool()
    def checkpoint(name: str, tag: str | None = None) -> dict[str, Any]:
        """Save a running workspace's root (a VM's memory too) under a tag."""
        with running(name) as ws:
            made = ws.checkpoint(tag)
        return {"tag": made.tag, "seq": made.seq}

    @tool()
    def rollback(name: str, tag: str) -> str:
        """Return a running workspace to a checkpoint; it is ready when this returns."""
        with running(name) as ws:
            ws.rollback(tag)
        return f"{name}: rolled back to {tag}"

    @tool()
    def egress_denials(name: str) -> dict[str, Any]:
        """What a workspace's allowlist let through and what it refused (with when)."""
        with running(name) as ws:
            record = ws.egress()
        if record is None:
            raise Refused(f"{name} has no allowlist (its internet is not a list)")
        return record.as_data()

    return server


def serve_stdio(config: Config) -> None:
    build(config).run("stdio")
