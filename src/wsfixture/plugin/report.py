"""What a failed test's report shows of the workspaces it used, and the summary of kept ones."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from wsfixture.plugin.session import session_key, used_key

if TYPE_CHECKING:
    from wsfixture.workspace import Workspace


REPORT_CHOICES = ("short", "full", "off")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        used = item.stash.get(used_key, [])
        session = item.config.stash.get(session_key, None)
        if session is not None:
            session.mark_failed(used)
        style = report_style(item.config)
        for ws in used if style != "off" else []:
            parts = diagnostics(ws) if style == "full" else commands_run(ws)
            for title, text in parts:
                report.sections.append((f"wsfixture {ws.name}: {title}", text))
    return report


def report_style(config: pytest.Config) -> str:
    style = config.getoption("--ws-report") or config.getini("wsfixture_report") or "short"
    if style not in REPORT_CHOICES:
        raise pytest.UsageError(
            f"wsfixture_report = {style!r}; allowed: {', '.join(REPORT_CHOICES)}"
        )
    return str(style)


def commands_run(ws: Workspace) -> list[tuple[str, str]]:
    """The short report: the test's own commands, each with its status and last lines."""
    if ws.session is None:
        return [("console (tail)", ws.logs(20))]
    ran = [r for r in ws.session.history if not r.probe]
    text = "\n".join(
        f"$ {r.command}  [exit {r.rc}, {r.seconds * 1000:.0f} ms]"
        + "".join(f"\n    {line}" for line in r.tail.splitlines())
        for r in ran
    )
    return [("commands (last lines of each)", text or "(none)")]


def diagnostics(ws: Workspace) -> list[tuple[str, str]]:
    """The full report: what a failure report shows of a workspace; each part gathered on
    its own."""
    parts: list[tuple[str, str]] = [("console (tail)", ws.logs(40))]
    commands = {
        "journal (tail)": "doas -n journalctl -b --no-pager -n 60",
        "failed units": "systemctl --failed --no-pager --no-legend",
        "network": "networkctl status --no-pager 2>&1 | head -30; ip -br addr; ip route",
    }
    for title, command in commands.items():
        try:
            _, out, err = ws.run(command, timeout=15, probe=True)
            parts.append((title, (out + err).strip() or "(empty)"))
        except Exception as exc:
            parts.append((title, f"(could not run: {type(exc).__name__}: {exc})"))
    if ws.session is not None:
        history = "\n".join(
            f"[rc={r.rc} {r.seconds * 1000:.0f}ms] {r.command}" for r in ws.session.history
        )
        parts.append(("commands run", history or "(none)"))
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
