"""``--ws-artifacts DIR``: what a failed test leaves behind for a CI run's artifacts.

For each failed test that used a workspace, ``DIR/<test id>/<workspace>/`` holds its
``console.log``, ``journal.txt``, ``commands.txt`` (every command the test ran, with its
exit status, duration and output up to ``remote.TRANSCRIPT_CAP`` a stream),
``describe.json`` and ``network.txt``. The test's JUnit XML entry gets the property
``wsfixture_artifacts`` (the directory), and under GitHub Actions
(``$GITHUB_STEP_SUMMARY``) a section per failure goes into the job's summary. Gathering one
part may fail (the workspace died): that file then says why; the report never fails for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wsfixture.host import logcap, settings
from wsfixture.workspaces.commands import journal_command

if TYPE_CHECKING:
    from wsfixture.workspaces import Workspace

PROPERTY = "wsfixture_artifacts"
TRANSCRIPT = "commands.jsonl"  # in the workspace's runtime dir, while it runs
CONSOLE_CAP = 4 * 2**20  # the console log's last bytes
JOURNAL_LINES = 2000
NETWORK = "ip -br addr; ip route; networkctl status --no-pager 2>&1 | head -40; ss -tunap"
SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def dir_name_of(nodeid: str) -> str:
    """A directory name for a test id: its characters kept where safe, others one "_",
    and a digest of the whole id where it had to be cut."""
    name = SAFE.sub("_", nodeid).strip("_") or "test"
    if len(name) <= 150:
        return name
    return f"{name[:130]}-{hashlib.sha256(nodeid.encode()).hexdigest()[:16]}"


def transcript_of(ws: Workspace) -> Path:
    return ws._runtime_dir / TRANSCRIPT


def commands_text(transcript: Path, since: int, until: int | None = None) -> str:
    """The commands from ``since`` on (before ``until``), whole, as ``commands.txt`` shows
    them."""
    if not transcript.is_file():
        return "(no command was run)\n"
    entries = []
    for line in transcript.read_text().splitlines():
        ran = json.loads(line)
        if ran["seq"] < since or (until is not None and ran["seq"] >= until):
            continue
        own = "  (wsfixture's own)" if ran["probe"] else ""
        entry = [f"$ {ran['command']}", f"# exit {ran['rc']}, {ran['seconds']:.3f} s{own}"]
        for stream in ("stdout", "stderr"):
            if ran[stream]:
                entry += [f"--- {stream} ---", ran[stream].rstrip("\n")]
        entries.append("\n".join(entry))
    return "\n\n".join(entries) + "\n" if entries else "(no command was run)\n"


def write(
    root: Path,
    nodeid: str,
    used: list[Workspace],
    since: dict[str, int],
    until: dict[str, int] | None = None,
) -> Path:
    """Write the failed test ``nodeid``'s artifacts for each workspace it used (its
    commands: from ``since`` to ``until``, by workspace); the test's directory."""
    test_dir = root / dir_name_of(nodeid)
    for ws in used:
        target = test_dir / ws.name
        target.mkdir(parents=True, exist_ok=True)
        span = (since.get(ws.name, 0), (until or {}).get(ws.name))
        for name, gather in parts_of(ws, *span).items():
            try:
                text = gather()
            except Exception as exc:  # an artifact must not fail the report
                text = f"(could not gather: {type(exc).__name__}: {exc})\n"
            (target / name).write_text(text)
    return test_dir


def parts_of(ws: Workspace, since: int, until: int | None) -> dict[str, Callable[[], str]]:
    """Each file of a workspace's artifacts, and how it is gathered."""
    return {
        settings.CONSOLE_LOG: lambda: console_tail(ws),
        "journal.txt": lambda: inside(ws, journal_command(JOURNAL_LINES)),
        "commands.txt": lambda: commands_text(transcript_of(ws), since, until),
        "describe.json": lambda: json.dumps(ws.describe(), indent=1, default=str),
        "network.txt": lambda: network(ws),
    }


def console_tail(ws: Workspace) -> str:
    return logcap.read_tail(ws.console_log, CONSOLE_CAP).decode(errors="replace")


def inside(ws: Workspace, command: str) -> str:
    rc, out, err = ws.run(command, timeout=30, probe=True)
    return out + err + ("" if rc == 0 else f"\n(exit {rc})\n")


def network(ws: Workspace) -> str:
    """The workspace's view (addresses, routes, sockets), then the lab's (its bridge)."""
    lab = ws.lab.run(["sh", "-c", "ip -br addr; ip route; ip -br link"], check=False)
    return f"## inside {ws.name}\n{inside(ws, NETWORK)}\n## the lab {ws.lab.name}\n{lab}"


def github_summary(nodeid: str, used: list[Workspace], test_dir: Path) -> None:
    """A section for the failed test in the GitHub Actions job summary, if there is one."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if not summary:
        return
    names = ", ".join(f"`{ws.name}` ({ws.spec.type})" for ws in used)
    with open(summary, "a") as out:
        out.write(f"### wsfixture: `{nodeid}` failed\n\nWorkspaces: {names}. Artifacts: "
                  f"`{test_dir}` (console, journal, commands, describe, network).\n\n")  # fmt: skip
