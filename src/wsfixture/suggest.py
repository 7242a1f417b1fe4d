""" "Did you mean": the closest spelling of a mistyped key, choice or workspace name, said
the same way wherever a name is checked (the config, the plugin's markers, the CLI)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def closest(value: object, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """'; did you mean "x"?' for the closest of ``choices``, or nothing."""
    close = closest(value, choices)
    return f"; did you mean {close!r}?" if close else ""


def looked_in(config_source: str) -> str:
    """Where the plugin looked for a workspace name: the config file, or none given."""
    return f" in {config_source}" if config_source else " (no --ws-config given)"


def unknown_workspace(names: Sequence[str], known: Sequence[str], where: str = "") -> str:
    """The one message for names that are not workspaces: which, where they were looked
    for, the closest known one, and every known one."""
    close = closest(names[0], known) if len(names) == 1 else None
    hint = f"did you mean {close!r}? " if close else ""
    shown = ", ".join(repr(n) for n in names)
    return f"no workspace named {shown}{where}; {hint}known: {', '.join(known) or 'none'}"
