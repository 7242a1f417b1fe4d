"""The next test's workspace, started while this test runs (``--ws-prestart``).

A restored VM takes seconds of one core to become ready, and many test bodies take less:
run one after the other, a session pays a whole restore per test while the machine's other
core waits. When the test that runs next (pytest's ``nextitem``; an xdist worker knows its
own next test) asks for a function-scoped inline workspace with the same marker fields,
that workspace starts in a thread of its own while this test runs.

It is the workspace the test would have booted: fresh from its image or template, with its
own name and address, and nothing but its readiness check runs in it before its test takes
it. A test whose workspace did not come from here boots its own as before; one that did
not start (a refused admission, a failure) is said in the log and booted anew by the test,
whose own boot then shows any error that is real.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from wsfixture.model.config import WorkspaceSpec
    from wsfixture.workspaces import Workspace

logger = logging.getLogger("wsfixture.plugin")


def prestart_key(name: str | None, fields: dict[str, Any], wanted: str) -> str | None:
    """What identifies a workspace that may start before its test, or None for one that
    may not: a named one (its name and address are fixed, and the running test may hold
    them), one with an ``ip``, a shared one, and a kind ``wanted`` leaves out."""
    if wanted == "off" or name is not None or "ip" in fields:
        return None
    if fields.get("scope", "function") != "function":
        return None
    if wanted == "vm" and fields.get("type", "container") != "vm":
        return None
    return repr(sorted((k, v) for k, v in fields.items() if k not in NOT_WORKSPACE))


# Marker keywords that say how a workspace is held, not what it is (the marker's check and
# the ``workspace`` fixture take them out of its fields as well).
NOT_WORKSPACE = ("scope", "reset")


def marker_args(node: pytest.Item, param: object) -> tuple[str | None, dict[str, Any]]:
    """The workspace a test asks for: the name and fields of its ``workspace`` marker, as
    its ``workspace`` parameter (indirect parametrization) changes them."""
    marker = node.get_closest_marker("workspace")
    fields: dict[str, Any] = {}
    name: str | None = None
    if marker is not None:
        name = marker.args[0] if marker.args else marker.kwargs.get("name")
        fields = {k: v for k, v in marker.kwargs.items() if k != "name"}
    if isinstance(param, str) and param in ("container", "vm"):
        fields["type"] = param
    elif isinstance(param, str):
        name = param
    elif isinstance(param, dict):
        fields.update(param)
    return name, fields


def param_of(item: pytest.Item) -> object:
    """The ``workspace`` fixture's parameter of a collected test, None if it has none."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("workspace") if callspec is not None else None


@dataclass
class Prestarted:
    """A workspace starting (or started) for a test that has not asked for it yet."""

    key: str
    spec: WorkspaceSpec
    started: Future[Workspace]

    def result(self) -> Workspace | None:
        """The workspace once it is ready; None if its start failed (said in the log: its
        test boots one of its own). An interrupt of this thread while it waits goes on:
        whoever holds this still owns what it starts (``settle``)."""
        failed = self.started.exception()
        if failed is None:
            return self.started.result()
        logger.warning(
            "wsfixture: %s, started before its test, failed (%s: %s); the test boots its own",
            self.spec.name, type(failed).__name__, failed,
        )  # fmt: skip
        return None

    def settle(self) -> tuple[Workspace | None, bool]:
        """Wait for the start to end, whatever comes meanwhile: the workspace (None if it
        failed) and whether an interrupt came. (An interrupt is noted, not obeyed: leaving
        now would leak the workspace.)"""
        interrupted = False
        while True:
            try:
                return self.result(), interrupted
            except KeyboardInterrupt:
                interrupted = True
