"""Commands that reach into a running workspace: ssh, cp, exec, logs, check, forward, and
the Ansible inventory of a lab."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from wsfixture import checks, copying
from wsfixture.cli.lookup import UsageError, lab_dir, require_running, running_workspace
from wsfixture.cli.output import EXIT_FAILED, answer, emit, progress, say
from wsfixture.cli.persistent import (
    handle_on_running,
)
from wsfixture.host import ledger, settings, system
from wsfixture.model.config import load_config
from wsfixture.net import inventory
from wsfixture.workspaces.commands import journal_command

if TYPE_CHECKING:
    from wsfixture.process import Process
    from wsfixture.workspaces import Workspace

# A guest writes its console; `logs` shows it on the user's terminal. Every escape and
# control character goes (OSC: window titles, OSC 52 clipboard writes; DCS; cursor moves;
# C1 controls; broken ones, an ESC[ cut short where systemd shortened a line), but tabs,
# newlines and, on a terminal, colours (SGR).
TERMINAL_ESCAPE = re.compile(
    r"\x1b[\]P^_X][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, DCS, PM, APC, SOS: to BEL or ST
    r"|\x1b\[[0-9;?]*[ -/]*[@-~]?"  # CSI
    r"|\x1b.?"  # any other escape
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"  # C0 but tab and newline, DEL, C1
)
SGR = re.compile(r"\x1b\[[0-9;]*m")


def for_terminal(text: str, colours: bool) -> str:
    """``text`` as a guest wrote it, safe to print: no escape but colours (``colours``)."""
    return TERMINAL_ESCAPE.sub(lambda m: m[0] if colours and SGR.fullmatch(m[0]) else "", text)


def cmd_ssh(args: argparse.Namespace) -> int:
    lab, directory = lab_dir(args)
    if args.lab:  # a lab kept by pytest: its workspaces are in the ledger
        known = sorted(ledger.workspaces(lab))
        where = f" in lab {lab}"
    else:
        known = list(load_config(args.config).workspaces)
        where = ""
    require_running(args.name, known, lab, where)
    ssh_config = directory / "ssh_config"
    argv = ["ssh", "-F", str(ssh_config), args.name, *args.command]
    os.execvp("ssh", argv)
    return EXIT_FAILED  # not reached


def cmd_cp(args: argparse.Namespace) -> int:
    """SFTP over the pinned session: exactly one side is NAME:PATH."""
    sides = [s.partition(":") if ":" in s and not s.startswith(("/", ".")) else None
             for s in (args.source, args.target)]  # fmt: skip
    if (sides[0] is None) == (sides[1] is None):
        raise UsageError("cp: exactly one of SOURCE and TARGET is NAME:PATH")
    try:
        limit = None if args.max is None else copying.parse_size(args.max)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if sides[0] is not None:
        name, _, remote = sides[0]
        ws = running_workspace(args, name)
        try:
            done = ws.get(remote, args.target, args.recursive, limit)
        finally:
            ws.stop()  # an attached handle: closes the connection only
    else:
        assert sides[1] is not None
        name, _, remote = sides[1]
        ws = running_workspace(args, name)
        try:
            done = ws.put(args.source, remote, args.recursive)
        finally:
            ws.stop()
    for path in done.skipped:
        print(f"wsfixture: cp: {path}: not a regular file, directory or link: skipped",
              file=sys.stderr)  # fmt: skip
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    """The command's words are its argv, as ``docker exec`` and ``kubectl exec`` take
    them: ``exec NAME sh -c 'cd repo && git log'`` for a shell line."""
    if not args.command:
        raise UsageError("exec: NAME COMMAND [ARG...]: a command to run")
    env = dict(_variable(word) for word in args.env)
    command = shlex.join(args.command)
    ws = running_workspace(args, args.name)
    try:
        if args.detach:
            process = ws.spawn(command, env=env, cwd=args.workdir, user=args.user)
            say(f"{args.name}: pid {process.pid}, output in {process.output_path}")
            return 0
        rc, out, err = ws.run(command, timeout=None, env=env, cwd=args.workdir, user=args.user)
        sys.stdout.write(out)
        sys.stderr.write(err)
        return rc
    finally:
        ws.stop()


def _variable(word: str) -> tuple[str, str]:
    key, equals, value = word.partition("=")
    if not equals:
        raise UsageError(f"exec: -e {word!r}: KEY=VALUE")
    return key, value


def cmd_jobs(args: argparse.Namespace) -> int:
    """The detached commands of a workspace: ID (its PID), state, command."""
    ws = running_workspace(args, args.name)
    try:
        rows = [{"id": str(job.pid), "state": job.listed, "command": job.command}
                for job in ws.jobs()]  # fmt: skip
    finally:
        ws.stop()
    if rows or args.json:
        emit(args, rows, ["id", "state", "command"])
    else:
        say(f"{args.name}: no jobs")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    """Signal a job's whole process group (TERM unless told)."""
    if not re.fullmatch(r"[A-Z]+[0-9]*|[0-9]+", args.signal.upper().removeprefix("SIG")):
        raise UsageError(f"kill: --signal {args.signal!r}: a signal's name or number (TERM, 9)")
    ws = running_workspace(args, args.name)
    try:
        job = _job(ws, args.name, args.id)
        job.kill(args.signal.upper().removeprefix("SIG"))
        say(f"{args.name}: job {args.id} sent SIG{args.signal.upper().removeprefix('SIG')}")
    finally:
        ws.stop()
    return 0


def _job(ws: Workspace, name: str, ident: str) -> Process:
    jobs = ws.jobs()
    found = next((job for job in jobs if str(job.pid) == ident), None)
    if found is None:
        known = ", ".join(str(job.pid) for job in jobs) or "none"
        raise UsageError(f"{name} has no job {ident!r}; its jobs: {known} (wsfixture jobs {name})")
    return found


def cmd_logs(args: argparse.Namespace) -> int:
    if args.job is not None:
        return job_logs(args)
    lab, directory = lab_dir(args)
    console = directory / args.name / settings.CONSOLE_LOG
    if not console.exists():
        raise UsageError(f"{args.name} has no console log in lab {lab} (not running?)")
    ssh = ["ssh", "-F", str(directory / "ssh_config"), args.name]
    if args.follow:
        # The journal has every service's output; the console is there for a workspace
        # that never got as far as sshd.
        if args.console:
            return follow_console(console, args.lines)
        os.execvp("ssh", [*ssh, journal_command(args.lines, follow=True)])
    tail = system.tail(console, args.lines)
    say(for_terminal(tail, colours=sys.stdout.isatty()))
    if args.console:
        return 0
    result = subprocess.run(
        [*ssh, journal_command(args.lines)], capture_output=True, text=True, timeout=60, check=False
    )
    say(f"--- journal of {args.name} ---\n{result.stdout or result.stderr}")
    return 0


def job_logs(args: argparse.Namespace) -> int:
    """The tail of a job's output, or (``-f``) its output as it comes."""
    ws = running_workspace(args, args.name)
    try:
        output = shlex.quote(_job(ws, args.name, args.job).output_path)
        if not args.follow:
            _, out, _ = ws.run(f"tail -n {int(args.lines)} {output}", timeout=60)
            sys.stdout.write(for_terminal(out, colours=sys.stdout.isatty()))
            return 0
    finally:
        ws.stop()
    _, directory = lab_dir(args)
    os.execvp("ssh", ["ssh", "-F", str(directory / "ssh_config"), args.name,
                      f"tail -n {int(args.lines)} -f {output}"])  # fmt: skip


def follow_console(console: Path, lines: int) -> int:
    """``tail -F`` of a console, each line made safe for the terminal, until Ctrl-C."""
    colours = sys.stdout.isatty()
    argv = ["tail", "-n", str(lines), "-F", str(console)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, errors="replace") as tail:
        assert tail.stdout is not None
        try:
            for line in tail.stdout:
                sys.stdout.write(for_terminal(line, colours))
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        finally:
            system.end_process(tail, 2.0)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    live = ledger.workspaces(config.network.namespace, live=True)
    names = args.names or list(live)
    outcomes: list[checks.Outcome] = []
    for name in names:
        if name not in live:
            raise UsageError(f"{name} is not running; start it with `wsfixture up {name}`")
        ws = handle_on_running(config, name)
        try:
            with progress().step(f"checking {name}") as say_check:
                outcomes += checks.verify(ws, say_check)
        finally:
            ws.stop()
    rows = [
        {"workspace": o.workspace, "check": o.check.id, "result": o.result,
         "detail": o.detail or o.check.doc}
        for o in outcomes
    ]  # fmt: skip
    emit(args, rows, ["workspace", "check", "result", "detail"])
    return 0 if all(o.ok for o in outcomes) else EXIT_FAILED


def cmd_forward(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    require_running(args.name, list(config.workspaces), config.network.namespace)
    ws = handle_on_running(config, args.name)
    try:
        host, port = ws.forward(args.port, args.local)
        say(f"{host}:{port} -> {args.name}:{args.port} (Ctrl-C to stop)")
        threading.Event().wait()
    except KeyboardInterrupt:
        say("")
    finally:
        ws.stop()  # closes the forward and the connection; the workspace keeps running
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    lab, directory = lab_dir(args)
    # The config's privilege tool, for become (a lab kept by pytest: doas, the default).
    privilege = "doas" if args.lab else load_config(args.config).defaults.privilege
    hosts = inventory.hosts(lab, directory / "ssh_config", privilege)
    say(inventory.render(hosts, args.format))
    return 0


def cmd_egress(args: argparse.Namespace) -> int:
    """What a running workspace's allowlist let through and refused."""
    ws = running_workspace(args, args.name)
    try:
        record = ws.egress()
    finally:
        ws.stop()  # an attached handle: closes the connection only
    if record is None:
        raise UsageError(f"{args.name} has no allowlist (its internet is not a list)")
    data = record.as_data()

    def text() -> str:
        lines = [f"allowlist: {', '.join(record.allowlist) or '(empty: nothing)'}"]
        lines += [f"allowed   {name}: {', '.join(addresses)}"
                  for name, addresses in record.resolved.items()]  # fmt: skip
        lines += [f"denied    {time.strftime('%H:%M:%S', time.localtime(d.when))} {d}"
                  for d in record.denied]  # fmt: skip
        return "\n".join([*lines, *([f"note: {record.note}"] if record.note else [])])

    answer(args, data, text)
    return 0
