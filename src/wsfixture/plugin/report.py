"""What a failed test's report shows of the workspaces it used, and the summary of kept ones."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from wsfixture.plugin import artifacts
from wsfixture.plugin.session import failed_key, faults_key, session_key, since_key, used_key
from wsfixture.workspaces.commands import journal_command

if TYPE_CHECKING:
    from wsfixture.workspaces import Workspace


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[failed_key] = True
        used = item.stash.get(used_key, [])
        session = item.config.stash.get(session_key, None)
        if session is not None:
            session.mark_failed(used)
        since = item.stash.get(since_key, {})
        # The test's commands end here: gathering what follows runs commands of our own.
        until = {ws.name: ws._ssh.commands_run for ws in used if ws._ssh is not None}
        faults = item.stash.get(faults_key, None)
        if faults is not None and faults.timeline:  # the failure, read against what broke
            report.sections.append(("wsfixture faults", faults.describe()))
        if session is not None and session.options.artifacts and used:
            where = artifacts.write(
                Path(session.options.artifacts), item.nodeid, used, since, until
            )
            if faults is not None and faults.timeline:
                (where / "faults.txt").write_text(faults.describe() + "\n")
            # junitxml writes the properties of the teardown's report, made from the item's.
            item.user_properties.append((artifacts.PROPERTY, str(where)))
            artifacts.github_summary(item.nodeid, used, where)
        style = report_style(item.config)
        for ws in used if style != "off" else []:
            parts = commands_run(ws, since.get(ws.name, 0), until.get(ws.name))
            if (oom := ws.out_of_memory()) is not None:
                parts.insert(0, ("limits", oom))
            if (denied := denials(ws)) is not None:
                parts.insert(0, ("egress denied (not in the allowlist)", denied))
            if style == "full":
                parts = diagnostics(ws) + parts
            for title, text in parts:
                report.sections.append((f"wsfixture {ws.name}: {title}", text))
    return report


def denials(ws: Workspace, last: int = 20) -> str | None:
    """The destinations its allowlist refused, newest last; None if none were."""
    try:
        record = ws.egress()
    except Exception as exc:  # a report must not fail for what it merely adds
        return f"(could not read: {type(exc).__name__}: {exc})"
    if record is None or not record.denied:
        return None
    said = [str(d) for d in record.denied[-last:]]
    return "\n".join([*said, *([record.note] if record.note else [])])


def report_style(config: pytest.Config) -> str:
    return config.stash[session_key].options.report


def commands_run(ws: Workspace, since: int = 0, until: int | None = None) -> list[tuple[str, str]]:
    """The test's commands on ``ws`` (those from ``since`` on, before ``until``), each with
    its status and last lines; wsfixture's own among them are marked."""
    if ws._ssh is None:
        return [("console (tail)", console_tail(ws, 20))]
    end = ws._ssh.commands_run if until is None else until
    ran = [r for r in ws._ssh.history if since <= r.seq < end]
    text = "\n".join(r.describe() for r in ran)
    return [("commands (last lines of each)", text or "(none)")]


def console_tail(ws: Workspace, lines: int) -> str:
    """The console's last lines, without a serial console's carriage returns (which showed
    as blank lines in a report)."""
    return ws.logs(lines).replace("\r\n", "\n").replace("\r", "")


def diagnostics(ws: Workspace) -> list[tuple[str, str]]:
    """What the full report adds about a workspace (before the test's commands); each part
    gathered on its own."""
    parts: list[tuple[str, str]] = [("console (tail)", console_tail(ws, 40))]
    commands = {
        "journal (tail)": journal_command(60),
        "failed units": "systemctl --failed --no-pager --no-legend",
        "network": "networkctl status --no-pager 2>&1 | head -30; ip -br addr; ip route",
    }
    for title, command in commands.items():
        try:
            _, out, err = ws.run(command, timeout=15, probe=True)
            parts.append((title, (out + err).strip() or "(empty)"))
        except Exception as exc:
            parts.append((title, f"(could not run: {type(exc).__name__}: {exc})"))
    return parts


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is None or not session.kept or session.lab is None:
        return
    lab = session.lab
    terminalreporter.section("wsfixture: kept workspaces")
    for ws in session.kept:
        terminalreporter.write_line(f"{ws.name} ({ws.spec.type}, {ws.ip}) in lab {lab.name}:")
        terminalreporter.write_line(f"    ssh -F {lab.ssh_config} {ws.name}")
        terminalreporter.write_line(f"    wsfixture ssh --lab {lab.name} {ws.name}")
    terminalreporter.write_line(f"remove them all: wsfixture gc --lab {lab.name}")
