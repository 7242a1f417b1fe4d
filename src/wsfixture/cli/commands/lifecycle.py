"""Commands that start, stop and reconcile CLI workspaces, and say which run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from wsfixture.cli.lookup import UsageError, select
from wsfixture.cli.output import EXIT_FAILED, answer, emit, progress, say, table
from wsfixture.cli.persistent import (
    changed_fields,
    config_snapshot,
    remove_lab_if_idle,
    restart_reason,
    start_workspace,
    status_rows,
    stop_supervised,
)
from wsfixture.host import keys, ledger, system
from wsfixture.model.config import load_config

if TYPE_CHECKING:
    pass


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


def cmd_down(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    lab = config.network.namespace
    live = ledger.workspaces(lab, live=True)
    names = args.names or list(live)
    for name in names:
        if name not in live:
            say(f"{name}: not running")
            continue
        stop_supervised(live[name])
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
            stop_supervised(live[name])
        ok, detail = start_workspace(config, name)
        say(f"{name}: restarted, {detail}" if ok else f"{name}: FAILED: {detail}")
        if not ok:
            return EXIT_FAILED
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
                stop_supervised(record)
            actions.append({"name": name, "action": start(name, "restarted"), **what})
        else:
            reason = "needs restart (restartIfChanged = false)"
            actions.append({"name": name, "action": reason, **what})
    for name, record in live.items():
        if name not in config.workspaces:
            if not dry:
                stop_supervised(record)
            verb = "would be stopped" if dry else "stopped"
            action = f"{verb} (removed from config; state kept)"
            actions.append({"name": name, "action": action, "changed": ""})
    if not dry and not ledger.workspaces(lab, live=True):
        remove_lab_if_idle(lab)
    emit(args, actions, ["name", "action", "changed"])
    return EXIT_FAILED if any("FAILED" in a["action"] for a in actions) else 0


def cmd_destroy(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    select(config, [args.name], True, lambda n: True)  # an unknown name: a usage error
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


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    select(config, args.names, True, lambda n: True)  # unknown names: a usage error
    rows = [r for r in status_rows(config) if not args.names or r["name"] in args.names]
    answer(args, rows, lambda: status_table(rows))
    return 0


def status_table(rows: list[dict[str, Any]]) -> str:
    shown = [
        {**r, "uptime": "-" if r["uptime"] is None else f"{r['uptime']}s",
         "matches": {None: "-", True: "yes", False: f"no: {restart_reason(r['changed'])}"}[
             r["matches"]]}
        for r in rows
    ]  # fmt: skip
    shown = [{**r, "stops": r["stops"] or "-", "limits": _limits(r["limits"])} for r in shown]
    columns = ["name", "type", "ip", "state", "uptime", "matches", "limits", "stops", "forwards"]
    return table(shown, columns)


def _limits(facts: dict[str, Any]) -> str:
    kills = facts.get("oom_kills")
    return f"{facts['summary']}" + (f", {kills} OOM kill(s)" if kills else "")


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for record in ledger.workspaces(live=True).values():
        info = ledger.workspace_info(record)
        rows.append(
            {"lab": info.lab, "name": info.name, "type": info.type, "ip": info.ip,
             "owner": record.owner.pid}
        )  # fmt: skip
    if rows or args.json:
        emit(args, rows, ["lab", "name", "type", "ip", "owner"])
    else:
        say("no workspace runs (wsfixture up NAME starts one)")
    return 0
