"""Configs for tests, and workspaces booted from them.

``make_config(state, **workspaces)`` gives each workspace without an ``ip`` the next free
address of the lab's subnet, so a test names only the addresses it asserts on.
``booted(config, *names)`` boots workspaces in a lab of their own and stops everything it
made when the block ends, also when a boot fails half way. Both stop a workspace as the
pytest plugin stops a test's (``discard_at_stop``: a VM's guest writes out what it holds
for its shares and is ended without its shutdown); a test of the shutdown itself starts
its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wsfixture.model.config import Config, WorkspaceSpec, config_from_dict
from wsfixture.model.spec import DEFAULT_SUBNET
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace

FIRST_HOST = 10  # below it: the gateway and room for hand-picked addresses


def make_config(
    state: Path,
    network: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    **workspaces: Any,
) -> Config:
    """A config whose state lives under ``state`` (``defaults`` and ``network`` added); a
    workspace given without an ``ip`` gets the next address from .10 on that no other
    workspace of it names."""
    taken = {str(fields["ip"]) for fields in workspaces.values() if "ip" in fields}
    free = (
        str(address)
        for address in list(DEFAULT_SUBNET.hosts())[FIRST_HOST - 1 :]
        if str(address) not in taken
    )
    entries = {
        name: fields if "ip" in fields else {**fields, "ip": next(free)}
        for name, fields in workspaces.items()
    }
    data: dict[str, Any] = {
        "defaults": {"stateRoot": str(state), **(defaults or {})},
        "workspaces": entries,
    }
    if network:
        data["network"] = network
    return config_from_dict(data)


@contextlib.contextmanager
def booted(config: Config, *wanted: str | WorkspaceSpec) -> Iterator[list[Workspace]]:
    """The workspaces named (or specs given), booted in order in a new lab, in the order
    asked; stopped in reverse and the lab removed when the block ends."""
    with Lab(config.network) as lab, contextlib.ExitStack() as stack:
        made = []
        for item in wanted:
            spec = config.workspaces[item] if isinstance(item, str) else item
            made.append(stack.enter_context(Workspace(spec, config, lab, discard_at_stop=True)))
        yield made
