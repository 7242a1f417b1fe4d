"""Commands about the config itself: plan, validate, schema, aliases, hosts entries. None
boots anything."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from wsfixture.cli import hostsfile
from wsfixture.cli.lookup import UsageError
from wsfixture.cli.output import answer, say
from wsfixture.cli.persistent import (
    alias_lines,
)
from wsfixture.host import settings, system
from wsfixture.model import derive, schema
from wsfixture.model.config import load_config
from wsfixture.model.plan import plan, render_text

if TYPE_CHECKING:
    pass


def cmd_plan(args: argparse.Namespace) -> int:
    data = plan(load_config(args.config_file or args.config))
    answer(args, data, lambda: render_text(data))
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


def cmd_aliases(args: argparse.Namespace) -> int:
    say("\n".join(alias_lines(load_config(args.config), args.shell)))
    return 0


def off_the_machine(ip: str, route_json: str) -> str | None:
    """Why the root namespace's route to ``ip`` (``ip -json route get``) leaves the
    machine (through a gateway, or none at all); None for a route on a link of its own
    (a lab kept in the root namespace: its bridge)."""
    try:
        routes = json.loads(route_json or "[]")
    except ValueError:
        routes = []
    route = routes[0] if routes and isinstance(routes[0], dict) else None
    if route is None:
        return f"the root namespace has no route to {ip}"
    if route.get("gateway"):
        return (
            f"the root namespace reaches {ip} only through {route['gateway']} on {route.get('dev')}"
        )
    return None


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
        routes = {str(s.ip): system.run(["ip", "-json", "route", "get", str(s.ip)], check=False)
                  for s in config.workspaces.values()}  # fmt: skip
        if problems := [p for ip, text in routes.items() if (p := off_the_machine(ip, text))]:
            raise UsageError(
                f"hosts --root-namespace: {problems[0]}: the names would send packets off this "
                f"machine. Run host tools in the lab (ip netns exec {config.network.namespace} "
                "...), or write the lab's own hosts file (without --root-namespace)"
            )
    else:
        target = settings.NETNS_ETC / config.network.namespace / "hosts"
    changed = hostsfile.write_block(target, entries)
    say(f"{target}: {'updated' if changed else 'already up to date'} ({len(entries)} entries)")
    return 0
