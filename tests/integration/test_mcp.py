"""``wsfixture mcp`` driven by the official ``mcp`` SDK's client over stdio, as an agent's
host drives it: the tools listed, a workspace started, a command run, a file written and
read, a checkpoint and a rollback, mistakes answered as tool errors, and the workspace
stopped with nothing left behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.support.leaks import leftovers
from tests.support.prereqs import require_root_and_tools
from wsfixture.host import system

CONFIG = """
[network]
namespace = "{ns}"

[defaults]
stateRoot = "{state}"

[workspaces.dev]
type = "container"
ip = "192.168.83.10"
"""

TOOLS = {
    "workspaces_list", "workspace_status", "workspace_up", "workspace_down", "exec",
    "read_file", "write_file", "checkpoint", "rollback", "egress_denials",
}  # fmt: skip


def text(result: Any) -> str:
    return "".join(part.text for part in result.content if part.type == "text")


def test_an_agent_drives_a_workspace_through_mcp(tmp_path: Path) -> None:
    require_root_and_tools("systemd-nspawn")
    ns = f"wsfmcp-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "workspaces.toml"
    config.write_text(CONFIG.format(ns=ns, state=tmp_path / "state"))
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "wsfixture.cli", "-c", str(config), "mcp"]
    )

    async def drive() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
            await session.initialize()

            async def call(tool: str, **arguments: Any) -> Any:
                return await session.call_tool(tool, arguments)

            seen["tools"] = {tool.name for tool in (await session.list_tools()).tools}
            seen["before"] = (await call("workspaces_list")).structured_content["workspaces"]
            seen["up"] = text(await call("workspace_up", name="dev"))
            ran = await call("exec", name="dev", command="id -un; echo err >&2; exit 3")
            seen["exec"] = ran.structured_content
            root = await call("exec", name="dev", command="id -u", user="root")
            seen["root"] = root.structured_content
            await call("write_file", name="dev", path="notes/todo.txt", content="ship it\n")
            seen["read"] = text(await call("read_file", name="dev", path="notes/todo.txt"))
            seen["checkpoint"] = text(await call("checkpoint", name="dev", tag="clean"))
            await call("exec", name="dev", command="rm -rf ~/notes")
            seen["rollback"] = text(await call("rollback", name="dev", tag="clean"))
            seen["after"] = text(await call("read_file", name="dev", path="notes/todo.txt"))
            unknown = await call("exec", name="nobody", command="true")
            seen["unknown"] = (unknown.is_error, text(unknown))
            no_list = await call("egress_denials", name="dev")
            seen["no_list"] = (no_list.is_error, text(no_list))
            seen["status"] = (await call("workspace_status", name="dev")).structured_content
            seen["down"] = text(await call("workspace_down", name="dev"))
            seen["gone"] = (await call("workspaces_list")).structured_content["workspaces"]
        return seen

    try:
        seen = asyncio.run(drive())
    finally:
        subprocess.run([sys.executable, "-m", "wsfixture.cli", "gc", "--lab", ns], check=False)
        system.remove_tree(tmp_path / "state")
    assert seen["tools"] == TOOLS
    assert [(w["name"], w["state"]) for w in seen["before"]] == [("dev", "stopped")]
    assert seen["up"].startswith("dev: ready in ")
    assert seen["exec"] == {"exit_code": 3, "stdout": "dev\n", "stderr": "err\n"}
    assert seen["root"]["stdout"] == "0\n"
    assert seen["read"] == "ship it\n"
    assert '"tag":"clean"' in seen["checkpoint"].replace(" ", "")
    assert seen["after"] == "ship it\n", "the rollback brought the file back"
    assert seen["unknown"][0] is True
    assert "nobody" in seen["unknown"][1]
    assert "dev" in seen["unknown"][1], "the error names the known workspaces"
    assert seen["no_list"] == (True, seen["no_list"][1])
    assert "has no allowlist" in seen["no_list"][1]
    assert seen["status"]["state"] == "running"
    assert seen["down"] == "dev: stopped"
    assert [(w["name"], w["state"]) for w in seen["gone"]] == [("dev", "stopped")]
    assert leftovers(ns) == {}
