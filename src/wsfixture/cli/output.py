"""What commands print: lines, tables for people, JSON for programs, progress on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from wsfixture.progress import Ticker

EXIT_FAILED, EXIT_USAGE, EXIT_PREREQ = 1, 2, 3


def say(text: str = "") -> None:
    print(text, flush=True)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain text table for people."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def answer(args: argparse.Namespace, data: object, text: Callable[[], str]) -> None:
    """``data`` as JSON with ``--json``, else ``text()`` for people (made only then): the
    one way a command chooses."""
    say(json.dumps(data) if args.json else text())


def emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """``rows`` as JSON with ``--json``, else as a table of ``columns``."""
    answer(args, rows, lambda: table(rows, columns))


def progress() -> Ticker:
    """Long steps on stderr: one redrawn line on a terminal, plain lines elsewhere."""

    def write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    return Ticker(write, sys.stderr.isatty())
