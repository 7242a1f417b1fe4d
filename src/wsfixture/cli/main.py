"""``wsfixture``: plan, start, inspect, verify and reap workspaces from the command line.

Workspaces started by ``up`` outlive the command: each has a supervisor process, and all of
a config live in one persistent lab (``network.namespace``, default "wsfixture"). Later
commands find them through the ledger.

Errors print without a traceback (``--debug`` shows it). Exit codes: 0 success, 1 a check
or a workspace failed, 2 bad input (usage or config), 3 a missing prerequisite.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsfixture import checks
from wsfixture.cli import hostsfile
from wsfixture.cli.persistent import (
    alias_lines,
    attached,
    changed_fields,
    config_snapshot,
    remove_lab_if_idle,
    restart_reason,
    start_workspace,
    status_rows,
    stop_record,
)
from wsfixture.errors import ConfigError, PrerequisiteError, WorkspaceGone, WsfixtureError
from wsfixture.host import keys, ledger, settings, system
from wsfixture.image import cache as imagecache
from wsfixture.image import templates
from wsfixture.model import derive, fields, schema
from wsfixture.model.config import Config, load_config
from wsfixture.model.plan import plan, render_text
from wsfixture.net import inventory
from wsfixture.progress import Ticker

if TYPE_CHECKING:
    from wsfixture.workspace import Workspace

EXIT_FAILED, EXIT_USAGE, EXIT_PREREQ = 1, 2, 3
# Colours and cursor moves of a console; a serial console also has broken ones (ESC[ cut
# short where systemd shortened a line), which go as well.
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]?|[()][0-9A-Za-z]|[@-Z\\-_])?")
DEFAULT_CONFIG = "workspaces.toml"


class UsageError(WsfixtureError):
    """The command line asks for something that cannot be."""


def say(text: str = "") -> None:
    print(text, flush=True)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain text table for people."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


# -- what runs -------------------------------------------------------------------------------


def select(
    config: Config, names: list[str], all_: bool, default: Callable[[str], bool]
) -> list[str]:
    unknown = [n for n in names if n not in config.workspaces]
    if unknown:
        known = ", ".join(config.workspaces) or "none"
        raise UsageError(
            f"no workspace named {', '.join(unknown)} in {config.source}; known: {known}"
        )
    if names:
        return names
    return [n for n in config.workspaces if all_ or default(n)]


# -- commands -------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    data = plan(load_config(args.config_file or args.config))
    say(json.dumps(data, indent=2) if args.json else render_text(data))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    path = args.config_file or args.config
    config = load_config(path)
    count = len(config.workspaces)
    say(f"{path}: valid, {count} workspace{'s' if count != 1 else ''}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    say(schema.options_table() if args.markdown else json.dumps(schema.config_schema(), indent=2))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from wsfixture.cli import doctor

    findings = doctor.examine()
    rows = [
        {"check": f.check, "result": "ok" if f.ok else ("MISSING" if f.required else "no"),
         "detail": f.detail, "fix": "" if f.ok else f.fix}
        for f in findings
    ]  # fmt: skip
    say(json.dumps(rows) if args.json else table(rows, ["check", "result", "detail", "fix"]))
    return EXIT_PREREQ if any(f.required and not f.ok for f in findings) else 0


def cmd_setup_host(args: argparse.Namespace) -> int:
    from wsfixture.host import setup

    return setup.setup_host(say)


def cmd_up(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    names = select(config, args.names, args.all, lambda n: config.workspaces[n].auto_start)
    live = ledger.workspaces(config.network.namespace, live=True)
    results: list[dict[str, Any]] = []
    for name in names:
        if name in live:
            results.append({"name": name, "result": "already running"})
            if not args.json:
                say(f"{name}: already running")
            continue
        what = f"starting {name} ({config.workspaces[name].type})"
        if not args.json:
            say(f"{what} ...")
        with progress().step(what) as say_detail:
            ok, detail = start_workspace(config, name, args.ttl, say_detail)
        results.append({"name": name, "result": detail, "ok": ok})
        if not args.json:
            say(f"  {name}: {detail}")
    if remove_lab_if_idle(config.network.namespace) and not args.json:
        say(f"lab {config.network.namespace}: removed (no workspace runs)")
    if args.json:
        say(json.dumps(results))
    return 0 if all(r.get("ok", True) for r in results) else EXIT_FAILED


def progress() -> Ticker:
    """Long steps on stderr: one redrawn line on a terminal, plain lines elsewhere."""

    def write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    return Ticker(write, sys.stderr.isatty())


def ttl_seconds(text: str) -> int:
    seconds = fields.parse_duration(text)
    if not seconds:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a duration; allowed: seconds, or like "90s", "30m", "2h", "1d"'
        )
    return seconds


def cmd_down(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    lab = config.network.namespace
    live = ledger.workspaces(lab, live=True)
    names = args.names or list(live)
    for name in names:
        if name not in live:
            say(f"{name}: not running")
            continue
        stop_record(live[name])
        say(f"{name}: stopped (state in {config.state_dir(name)} kept)")
    if remove_lab_if_idle(lab):
        say(f"lab {lab}: removed (no workspace left)")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    live = ledger.workspaces(config.network.namespace, live=True)
    names = select(config, args.names, True, lambda n: True)
    for name in names:
        if name in live:
            stop_record(live[name])
        ok, detail = start_workspace(config, name)
        say(f"{name}: restarted, {detail}" if ok else f"{name}: FAILED: {detail}")
        if not ok:
            return EXIT_FAILED
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    select(config, args.names, True, lambda n: True)  # unknown names: a usage error
    rows = [r for r in status_rows(config) if not args.names or r["name"] in args.names]
    if args.json:
        say(json.dumps(rows))
        return 0
    shown = [
        {**r, "uptime": "-" if r["uptime"] is None else f"{r['uptime']}s",
         "matches": {None: "-", True: "yes", False: f"no: {restart_reason(r['changed'])}"}[
             r["matches"]]}
        for r in rows
    ]  # fmt: skip
    shown = [{**r, "stops": r["stops"] or "-"} for r in shown]
    say(table(shown, ["name", "type", "ip", "state", "uptime", "matches", "stops", "forwards"]))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for record in ledger.workspaces(live=True).values():
        info = ledger.workspace_info(record)
        rows.append(
            {"lab": info.lab, "name": info.name, "type": info.type, "ip": info.ip,
             "owner": record.owner.pid}
        )  # fmt: skip
    say(json.dumps(rows) if args.json else table(rows, ["lab", "name", "type", "ip", "owner"]))
    return 0


def lab_dir(args: argparse.Namespace) -> tuple[str, Path]:
    name = args.lab or load_config(args.config).network.namespace
    return name, settings.current().labs_dir / name


def require_running(name: str, known: list[str], lab: str, where: str = "") -> None:
    """A usage error for a name that is not a workspace (exit 2), WorkspaceGone for one
    that is not running (exit 1)."""
    if name not in known:
        raise UsageError(f"no workspace named {name}{where}; known: {', '.join(known) or 'none'}")
    if name not in ledger.workspaces(lab, live=True):
        raise WorkspaceGone(name, f"start it with `wsfixture up {name}`")


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


def running_workspace(args: argparse.Namespace, name: str) -> Workspace:
    """A handle on a running CLI workspace of the config (usage error for an unknown name,
    WorkspaceGone for a stopped one)."""
    config = load_config(args.config)
    require_running(name, list(config.workspaces), config.network.namespace)
    return attached(config, name)


def cmd_cp(args: argparse.Namespace) -> int:
    """SFTP over the pinned session: exactly one side is NAME:PATH."""
    sides = [s.partition(":") if ":" in s and not s.startswith(("/", ".")) else None
             for s in (args.source, args.target)]  # fmt: skip
    if (sides[0] is None) == (sides[1] is None):
        raise UsageError("cp: exactly one of SOURCE and TARGET is NAME:PATH")
    if sides[0] is not None:
        name, _, remote = sides[0]
        ws = running_workspace(args, name)
        ws.get(remote, args.target)
    else:
        assert sides[1] is not None
        name, _, remote = sides[1]
        ws = running_workspace(args, name)
        ws.put(args.source, remote)
    ws.stop()  # an attached handle: closes the connection only
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    ws = running_workspace(args, args.name)
    command = " ".join(args.command)  # as ssh joins its words: one line for the shell
    try:
        if args.detach:
            process = ws.spawn(command)
            say(f"{args.name}: pid {process.pid}, output in {process.output_path}")
            return 0
        rc, out, err = ws.run(command, timeout=None)
        sys.stdout.write(out)
        sys.stderr.write(err)
        return rc
    finally:
        ws.stop()


def cmd_inventory(args: argparse.Namespace) -> int:
    lab, directory = lab_dir(args)
    say(inventory.render(inventory.hosts(lab, directory / "ssh_config"), args.format))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    lab, directory = lab_dir(args)
    console = directory / args.name / "console.log"
    if not console.exists():
        raise UsageError(f"{args.name} has no console log in lab {lab} (not running?)")
    ssh = ["ssh", "-F", str(directory / "ssh_config"), args.name]
    journal = f"doas -n journalctl -b --no-pager -n {args.lines}"
    if args.follow:
        # The journal has every service's output; the console is there for a workspace
        # that never got as far as sshd.
        if args.console:
            os.execvp("tail", ["tail", "-n", str(args.lines), "-F", str(console)])
        os.execvp("ssh", [*ssh, f"{journal} --follow"])
    tail = system.tail(console, args.lines)
    say(tail if sys.stdout.isatty() else ANSI_ESCAPE.sub("", tail))
    if args.console:
        return 0
    result = subprocess.run(
        [*ssh, journal], capture_output=True, text=True, timeout=60, check=False
    )
    say(f"--- journal of {args.name} ---\n{result.stdout or result.stderr}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    live = ledger.workspaces(config.network.namespace, live=True)
    names = args.names or list(live)
    outcomes: list[checks.Outcome] = []
    for name in names:
        if name not in live:
            raise UsageError(f"{name} is not running; start it with `wsfixture up {name}`")
        ws = attached(config, name)
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
    say(json.dumps(rows) if args.json else table(rows, ["workspace", "check", "result", "detail"]))
    return 0 if all(o.ok for o in outcomes) else EXIT_FAILED


def cmd_forward(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    require_running(args.name, list(config.workspaces), config.network.namespace)
    ws = attached(config, args.name)
    try:
        host, port = ws.forward(args.port, args.local)
        say(f"{host}:{port} -> {args.name}:{args.port} (Ctrl-C to stop)")
        threading.Event().wait()
    except KeyboardInterrupt:
        say("")
    finally:
        ws.stop()  # closes the forward and the connection; the workspace keeps running
    return 0


def cmd_aliases(args: argparse.Namespace) -> int:
    say("\n".join(alias_lines(load_config(args.config), args.shell)))
    return 0


def cmd_hosts(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    entries = [derive.hosts_line(s.name, str(s.ip)) for s in config.workspaces.values()]
    if not args.apply:
        say("\n".join(entries))
        return 0
    if args.file:
        target = Path(args.file)
    elif args.root_namespace:
        target = Path("/etc/hosts")
    else:
        target = Path("/etc/netns") / config.network.namespace / "hosts"
    changed = hostsfile.write_block(target, entries)
    say(f"{target}: {'updated' if changed else 'already up to date'} ({len(entries)} entries)")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """Bring running workspaces in line with the config file."""
    config = load_config(args.config)
    lab = config.network.namespace
    live = ledger.workspaces(lab, live=True)
    actions: list[dict[str, str]] = []
    dry = args.dry_run

    def start(name: str, done: str) -> str:
        if dry:
            return f"would be {done}"
        with progress().step(f"{'restarting' if done == 'restarted' else 'starting'} {name}") as s:
            ok, detail = start_workspace(config, name, say=s)
        return done if ok else f"FAILED: {detail}"

    for name, spec in config.workspaces.items():
        record = live.get(name)
        if record is None:
            if spec.auto_start:
                actions.append({"name": name, "action": start(name, "started"), "changed": ""})
            continue
        supervisor = ledger.workspace_info(record).supervisor
        changed = changed_fields(supervisor, config_snapshot(config, spec)) if supervisor else None
        what = {"changed": ", ".join(changed) if changed else ""}
        if changed == []:
            actions.append({"name": name, "action": "unchanged", "changed": ""})
        elif spec.restart_if_changed:
            if not dry:
                stop_record(record)
            actions.append({"name": name, "action": start(name, "restarted"), **what})
        else:
            reason = "needs restart (restartIfChanged = false)"
            actions.append({"name": name, "action": reason, **what})
    for name, record in live.items():
        if name not in config.workspaces:
            if not dry:
                stop_record(record)
            verb = "would be stopped" if dry else "stopped"
            action = f"{verb} (removed from config; state kept)"
            actions.append({"name": name, "action": action, "changed": ""})
    if not dry and not ledger.workspaces(lab, live=True):
        remove_lab_if_idle(lab)
    say(json.dumps(actions) if args.json else table(actions, ["name", "action", "changed"]))
    return EXIT_FAILED if any("FAILED" in a["action"] for a in actions) else 0


def cmd_destroy(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.name not in config.workspaces:
        raise UsageError(f"no workspace named {args.name} in {config.source}")
    if args.name in ledger.workspaces(config.network.namespace, live=True):
        raise UsageError(f"{args.name} is running; `wsfixture down {args.name}` first")
    state = config.state_dir(args.name)
    if not state.exists():
        say(f"{state}: nothing to delete")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("destroy deletes the workspace's files; confirm with --yes")
        answer = input(f"delete {state} (workspace files, host keys)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            say("kept")
            return EXIT_FAILED
    system.remove_tree(state)  # what is mounted inside is detached, never emptied
    say(f"{state}: deleted")
    keys_dir = keys.client_key_dir(config.state_root())
    if keys_dir.exists() and not [p for p in config.state_root().iterdir() if p != keys_dir]:
        system.remove_tree(keys_dir)  # the last workspace's: no lab can use the key now
        say(f"{keys_dir}: deleted (no workspace state is left under {config.state_root()})")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    if args.lab:
        # A CLI workspace's supervisor stops it itself and exits; reaping under a live
        # supervisor would leave it to tidy up a lab that is already gone.
        for record in ledger.workspaces(args.lab, live=True).values():
            if ledger.workspace_info(record).supervisor is not None:
                stop_record(record)
    reaped, failures = ledger.reap(args.lab)
    if args.json:
        say(json.dumps({"reaped": [r.key for r in reaped], "failures": [str(f) for f in failures]}))
    elif not args.quiet or reaped:
        say(f"gc: reaped {len(reaped)} record(s)" + "".join(f"\n  {r.key}" for r in reaped))
    for what, exc in failures:
        print(f"gc: could not {what}: {exc}", file=sys.stderr)
    return EXIT_FAILED if failures else 0


def cmd_images(args: argparse.Namespace) -> int:
    if args.remove:
        try:
            removed = imagecache.remove_keys(args.remove)
        except ValueError as exc:
            raise UsageError(f"nothing removed: {exc}") from None
        for key, size in removed:
            say(f"removed {key} ({size / 2**20:.0f} MiB)")
        return 0
    if args.prune:
        images_dir = settings.current().cache_dir / "images"
        dropped = [
            (t.key, "unused" if (why := t.state(images_dir)) == "current" else why, size)
            for t, size in imagecache.prune_templates(args.days, dry_run=args.dry_run)
        ]
        dropped += [
            (i.key, i.state if i.outdated else "unused", size)
            for i, size in imagecache.prune(args.days, dry_run=args.dry_run)
        ]
        freed = sum(size for _, _, size in dropped)
        if args.json:
            say(json.dumps({"removed": [key for key, _, _ in dropped], "bytes": freed}))
            return 0
        verb = "would remove" if args.dry_run else "removed"
        for key, why, size in dropped:
            say(f"{verb} {key} ({why}, {size / 2**20:.0f} MiB)")
        say(f"images and templates: {verb} {len(dropped)}, {freed / 2**30:.1f} GiB")
        # What stays though no config may want it any more (a layer whose setup changed):
        # unused, but within --days. Say so, rather than leave a bare "0".
        kept = [i for i in imagecache.cached_images() if i.key not in {k for k, _, _ in dropped}]
        recent = [i for i in kept if i.key not in imagecache.busy_keys(kept)]
        if recent:
            say(f"kept {len(recent)} not in use but used within {args.days:g} days "
                "(`--days 0` prunes every unused one; `--remove KEY` one of them)")  # fmt: skip
        return 0
    images = imagecache.cached_images()
    busy = imagecache.busy_keys(images)
    now = time.time()
    rows = [
        {
            "image": i.key,
            "kind": "unreadable" if i.recipe is None else (
                f"layer over {i.base_key}" if i.base_key else "base"),
            "adds": ", ".join(i.recipe.adds) if i.recipe else "",
            "last_used": f"{(now - i.last_used) / 3600:.0f}h ago",
            "size": f"{imagecache.size_of(i.dir) / 2**20:.0f} MiB",
            "state": "in use" if i.key in busy else i.state,
        }
        for i in images
    ]  # fmt: skip
    found = templates.cached_templates()
    in_use = imagecache.busy_keys(found)
    images_dir = settings.current().cache_dir / "images"
    rows += [
        {
            "image": t.key,
            "kind": f"VM template of {t.shape.image_key}" if t.shape else "VM template",
            "adds": f"{t.shape.vcpu} vCPU, {t.shape.memory} MiB, {t.shape.accel}"
            if t.shape else "",
            "last_used": f"{(now - t.last_used) / 3600:.0f}h ago",
            "size": f"{imagecache.size_of(t.dir) / 2**20:.0f} MiB",
            "state": "in use" if t.key in in_use else t.state(images_dir),
        }
        for t in found
    ]  # fmt: skip
    rows += [
        {"image": staging.name, "kind": "half built", "adds": "", "last_used": "-", "size": "-",
         "state": "building" if alive else "abandoned: `wsfixture gc` removes it"}
        for staging, alive in imagecache.builds()
    ]  # fmt: skip
    columns = ["image", "kind", "adds", "last_used", "size", "state"]
    say(json.dumps(rows) if args.json else table(rows, columns))
    return 0


# -- parser ---------------------------------------------------------------------------------


def global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """-c and --debug, before the command (with their defaults) and after it (without, so
    they override only when given there)."""
    config_default = os.environ.get("WSFIXTURE_CONFIG", DEFAULT_CONFIG)
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks",
        default=False if defaults else argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument(
        "-c", "--config",
        help=f"workspace config (default: $WSFIXTURE_CONFIG or ./{DEFAULT_CONFIG})",
        default=config_default if defaults else argparse.SUPPRESS,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    doc = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="wsfixture", description=doc)
    global_options(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"wsfixture {version()}")
    after = argparse.ArgumentParser(add_help=False)
    global_options(after, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], text: str,
                json_out: bool = False) -> argparse.ArgumentParser:  # fmt: skip
        p = sub.add_parser(name, help=text, description=text, parents=[after])
        p.set_defaults(func=func)
        if json_out:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = command("plan", cmd_plan, "print every workspace's derived identity; boots nothing", True)
    p.add_argument("config_file", nargs="?", help="config (default: -c)")
    p = command("validate", cmd_validate, "check a config; print every problem")
    p.add_argument("config_file", nargs="?", help="config (default: -c)")
    command("doctor", cmd_doctor, "is this host ready? what to install if not (exit 3)", True)
    command("setup-host", cmd_setup_host, "install what wsfixture needs (Debian/Ubuntu, root)")
    p = command("schema", cmd_schema, "the config's JSON Schema, for editors that check TOML")
    p.add_argument("--markdown", action="store_true", help="the options as a Markdown table")
    p = command("up", cmd_up, "start workspaces (default: those with autoStart)", True)
    p.add_argument("names", nargs="*")
    p.add_argument("--ttl", type=ttl_seconds, metavar="DURATION",
                   help='stop them after this long, like "90s", "30m", "2h"')  # fmt: skip
    p.add_argument("--all", action="store_true", help="every workspace of the config")
    p = command("down", cmd_down, "stop workspaces (default: all running); state is kept")
    p.add_argument("names", nargs="*")
    p = command("restart", cmd_restart, "stop and start workspaces")
    p.add_argument("names", nargs="+")
    p = command(
        "status", cmd_status, "state, IP, uptime, type, and whether it matches the config", True
    )
    p.add_argument("names", nargs="*", help="just these (default: all)")
    command("list", cmd_list, "running workspaces of every lab", True)
    p = command("ssh", cmd_ssh, "ssh into a workspace (pinned host key)")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.add_argument("--lab", help="another lab, e.g. one kept by pytest")
    p = command("logs", cmd_logs, "console log and journal of a workspace")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="follow the journal")
    p.add_argument("--console", action="store_true", help="the console log only")
    p.add_argument("-n", "--lines", type=int, default=100)
    p.add_argument("--lab", help="another lab, e.g. one kept by pytest")
    p = command("check", cmd_check, "run the verification suite on running workspaces", True)
    p.add_argument("names", nargs="*")
    p = command("forward", cmd_forward, "relay 127.0.0.1:<local> to a workspace's port")
    p.add_argument("name")
    p.add_argument("port", type=int)
    p.add_argument("--local", type=int, default=0, help="the host port (default: a free one)")
    p = command("cp", cmd_cp, "copy a file in or out: cp LOCAL NAME:PATH, cp NAME:PATH LOCAL")
    p.add_argument("source")
    p.add_argument("target")
    p = command("exec", cmd_exec, "run a command in a workspace; --detach leaves it running")
    p.add_argument("--detach", action="store_true", help="return at once; output to a file")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = command("aliases", cmd_aliases, 'shell aliases: eval "$(wsfixture aliases)"')
    p.add_argument("--shell", choices=("bash", "zsh", "fish"), default="bash")
    p = command("hosts", cmd_hosts, "print hosts entries, or --apply them to a hosts file")
    p.add_argument("--apply", action="store_true")
    p.add_argument("--file", help="hosts file to edit (default: the lab's)")
    p.add_argument("--root-namespace", action="store_true", help="edit the real /etc/hosts")
    p = command("apply", cmd_apply, "restart changed workspaces, start new autoStart ones", True)
    p.add_argument("--dry-run", action="store_true", help="say what it would do; do nothing")
    p = command("completion", cmd_completion, 'shell completion: eval "$(wsfixture completion)"')
    p.add_argument("shell", nargs="?", choices=("bash", "zsh", "fish"), default="bash")
    p = command("destroy", cmd_destroy, "delete a stopped workspace's state directory")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p = command("gc", cmd_gc, "reap what crashed runs left behind (dead owners only)", True)
    p.add_argument("--quiet", action="store_true", help="print only when something was reaped")
    p.add_argument("--lab", help="release everything of this lab, kept workspaces too")
    p = command(
        "inventory", cmd_inventory,
        "an Ansible inventory of a lab's running workspaces (host keys stay pinned)",
    )  # fmt: skip
    p.add_argument("--lab", help="a lab kept by pytest (default: the config's persistent lab)")
    p.add_argument("--format", choices=inventory.FORMATS, default="ini")
    p = command("images", cmd_images, "the image cache; --prune removes stale images", True)
    p.add_argument(
        "--prune",
        action="store_true",
        help="remove images of an older wsfixture or unused for --days",
    )
    p.add_argument("--days", type=float, default=14.0, help="keep images used since (14)")
    p.add_argument("--dry-run", action="store_true", help="say what --prune would remove")
    p.add_argument("--remove", nargs="+", metavar="KEY", help="remove these images/templates")
    return parser


def version() -> str:
    try:
        return importlib.metadata.version("wsfixture")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    say(argcomplete.shellcode(["wsfixture"], shell=args.shell))  # type: ignore[attr-defined]
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if argv is None:
        import argcomplete

        argcomplete.autocomplete(parser)  # answers a completing shell, then exits
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, UsageError) as exc:
        if args.debug:
            raise
        print(f"wsfixture: {exc}" if isinstance(exc, UsageError) else exc, file=sys.stderr)
        return EXIT_USAGE
    except PrerequisiteError as exc:
        if args.debug:
            raise
        print(f"wsfixture: {exc}", file=sys.stderr)
        return EXIT_PREREQ
    except WsfixtureError as exc:
        if args.debug:
            raise
        print(f"wsfixture: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `wsfixture images | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
