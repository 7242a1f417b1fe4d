"""The ``workspace`` marker's (and the factory's) arguments: checked at collection, so a
mistake is a usage error naming the test and the marker, not a default workspace booted."""

from __future__ import annotations

import pytest

from wsfixture.errors import ConfigError
from wsfixture.model.config import override, workspace_spec
from wsfixture.model.validation import WORKSPACE_KEYS, camel
from wsfixture.plugin.prestart import NOT_WORKSPACE
from wsfixture.plugin.reset import RESET_CHOICES
from wsfixture.plugin.session import WsSession
from wsfixture.suggest import did_you_mean, looked_in, unknown_workspace

SCOPES = ("function", "module", "session")

# The marker's and the factory's keywords: a name, a scope, and every workspace field in
# either spelling, as the model declares them.
MARKER_FIELDS = (
    "name", *NOT_WORKSPACE,
    *dict.fromkeys(spelling for key in WORKSPACE_KEYS[1:] for spelling in (key, camel(key))),
)  # fmt: skip


def check_marker(item: pytest.Item, marker: pytest.Mark, session: WsSession) -> None:
    """A marker's mistakes are usage errors at collection, naming the test and the marker,
    with a "did you mean": not a default workspace booted, nor wsfixture's traceback."""
    shown = ", ".join(
        [*(repr(a) for a in marker.args), *(f"{k}={v!r}" for k, v in marker.kwargs.items())]
    )
    where = f"{item.nodeid}: @pytest.mark.workspace({shown})"
    problems = []
    for key in sorted(set(marker.kwargs) - set(MARKER_FIELDS)):
        problems.append(f"unknown argument {key!r}{did_you_mean(key, MARKER_FIELDS)}")
    if len(marker.args) > 1:
        problems.append(f"one name only, got {len(marker.args)} positional arguments")
    scope = marker.kwargs.get("scope", "function")
    if scope not in SCOPES:
        problems.append(f"scope={scope!r}; allowed: {', '.join(SCOPES)}")
    reset = marker.kwargs.get("reset", "none")
    if reset not in RESET_CHOICES:
        problems.append(f"reset={reset!r}; allowed: {', '.join(RESET_CHOICES)}")
    elif reset == "checkpoint" and scope == "function":
        problems.append("reset='checkpoint' is for a shared workspace: scope='module' or "
                        "'session' (a function-scoped one is new for each test)")  # fmt: skip
    if problems:
        raise pytest.UsageError(f"{where}: {'; '.join(problems)}")
    try:
        ws_config = session.config
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    fields = {k: v for k, v in marker.kwargs.items() if k not in ("name", *NOT_WORKSPACE)}
    name = marker.args[0] if marker.args else None
    try:
        if name is not None and name not in ws_config.workspaces:
            known = list(ws_config.workspaces)
            unknown = unknown_workspace([name], known, looked_in(ws_config.source))
            raise pytest.UsageError(f"{where}: {unknown} (an inline workspace takes name=...)")
        if name is not None:
            override(ws_config, ws_config.workspaces[name], **fields)
        else:
            # The address comes from the free range when the test runs; any usable one
            # stands in for it here.
            placeholder = {"type": "container", "ip": str(ws_config.network.range_start)}
            workspace_spec(
                ws_config, name=marker.kwargs.get("name", "x"), **{**placeholder, **fields}
            )
    except ConfigError as exc:
        problems = [str(issue).removeprefix("workspace.") for issue in exc.issues]
        raise pytest.UsageError(f"{where}: " + "; ".join(problems)) from None
