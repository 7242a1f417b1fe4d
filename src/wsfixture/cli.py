"""``wsfixture``: plan, validate and reap workspaces from the command line.

Errors print without a traceback (``--debug`` shows it). Exit codes: 0 success, 1 a check or
command failed, 2 bad input (usage or config), 3 a missing prerequisite.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from wsfixture import ledger
from wsfixture.config import load_config
from wsfixture.errors import ConfigError, PrerequisiteError, WsfixtureError
from wsfixture.plan import plan, render_text

EXIT_FAILED, EXIT_USAGE, EXIT_PREREQ = 1, 2, 3


def cmd_plan(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    data = plan(config)
    print(json.dumps(data, indent=2) if args.json else render_text(data))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    count = len(config.workspaces)
    print(f"{args.config}: valid, {count} workspace{'s' if count != 1 else ''}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    reaped, failures = ledger.reap(args.lab)
    if args.json:
        print(
            json.dumps({"reaped": [r.key for r in reaped], "failures": [str(f) for f in failures]})
        )
    elif not args.quiet or reaped:
        print(
            f"gc: reaped {len(reaped)} orphaned record(s)" + "".join(f"\n  {r.key}" for r in reaped)
        )
    for what, exc in failures:
        print(f"gc: could not {what}: {exc}", file=sys.stderr)
    return EXIT_FAILED if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsfixture", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = command("plan", cmd_plan, "print every workspace's derived identity; boots nothing")
    p.add_argument("config")
    p.add_argument("--json", action="store_true")
    p = command("validate", cmd_validate, "check a config; print every problem")
    p.add_argument("config")
    p = command("gc", cmd_gc, "reap what crashed runs left behind (dead owners only)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="print only when something was reaped")
    p.add_argument("--lab", help="release everything of this lab, also kept workspaces")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        if args.debug:
            raise
        print(exc, file=sys.stderr)
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
        for note in getattr(exc, "__notes__", []):
            print(note, file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
