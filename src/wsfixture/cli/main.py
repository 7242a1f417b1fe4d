"""``wsfixture``: plan, start, inspect, verify and reap workspaces from the command line.

Workspaces started by ``up`` outlive the command: each has a supervisor process, and all of
a config live in one persistent lab (``network.namespace``, default "wsfixture"). Later
commands find them through the ledger.

Errors print without a traceback (``--debug`` shows it). Exit codes: 0 success, 1 a check
or a workspace failed, 2 bad input (usage or config), 3 a missing prerequisite.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from wsfixture.cli.lookup import UsageError
from wsfixture.cli.output import EXIT_FAILED, EXIT_PREREQ, EXIT_USAGE
from wsfixture.cli.parser import build_parser, parse
from wsfixture.errors import ConfigError, PrerequisiteError, WsfixtureError

__all__ = ["EXIT_FAILED", "EXIT_PREREQ", "EXIT_USAGE", "build_parser", "main"]

# What each kind of error exits with, the first match in order; a usage error is said
# with the program's name, a config error (which names its file) as it is.
EXIT_CODES: tuple[tuple[type[WsfixtureError], int], ...] = (
    (UsageError, EXIT_USAGE),
    (ConfigError, EXIT_USAGE),
    (PrerequisiteError, EXIT_PREREQ),
    (WsfixtureError, EXIT_FAILED),
)


def exit_code(exc: WsfixtureError) -> int:
    return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if argv is None:
        import argcomplete

        argcomplete.autocomplete(parser)  # answers a completing shell, then exits
    args = parse(parser, argv)
    try:
        result: int = args.func(args)
        return result
    except WsfixtureError as exc:
        if args.debug:
            raise
        print(exc if isinstance(exc, ConfigError) else f"wsfixture: {exc}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:  # `wsfixture images | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
