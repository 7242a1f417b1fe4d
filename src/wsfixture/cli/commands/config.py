"""Commands about the config itself: plan, validate, schema, aliases, hosts entries. None
boots anything."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from wsfixture.cli import hostsfile
from wsfixture.cli.output import say
from wsfixture.cli.persistent import (
    alias_lines,
)
from wsfixture.model import derive, schema
from wsfixture.model.config import load_config
from wsfixture.model.plan import plan, render_text

if TYPE_CHECKING:
    pass


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
