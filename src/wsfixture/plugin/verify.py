"""``--ws-verify``: one test item per workspace of the config and built-in check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from wsfixture.errors import ConfigError
from wsfixture.plugin.session import session_key, used_key

if TYPE_CHECKING:
    from wsfixture.checks import Check


class VerifyItem(pytest.Item):
    """One built-in check on one workspace of the config."""

    def __init__(self, *, ws_name: str, check: Check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ws_name = ws_name
        self.check = check

    def runtest(self) -> None:
        session = self.config.stash[session_key]
        key = ("verify", self.ws_name)
        if key not in session.shared:
            session.shared[key] = session.boot(session.spec(self.ws_name))
        ws = session.shared[key]
        self.stash[used_key] = [ws]
        from wsfixture.checks import CheckSkipped

        try:
            self.check.run(ws)
        except CheckSkipped as skipped:
            pytest.skip(f"{self.check.id} on {self.ws_name}: {skipped}")

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # The config given either way (--ws-config or the ini), as the session reads it.
        return Path(self.config.stash[session_key].config_path or "."), None, self.name

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, AssertionError):
            return f"{self.name}: {self.check.doc}\n{excinfo.value}"
        return str(super().repr_failure(excinfo))


def verify_items(session: pytest.Session, config: pytest.Config) -> list[pytest.Item]:
    """The items ``--ws-verify`` adds."""
    from wsfixture.checks import CHECKS

    try:
        ws_config = config.stash[session_key].config
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from exc
    if not ws_config.workspaces:
        raise pytest.UsageError("--ws-verify needs --ws-config with at least one workspace")
    return [
        VerifyItem.from_parent(
            session, name=f"verify[{name}:{check.id}]", ws_name=name, check=check
        )
        for name in ws_config.workspaces
        for check in CHECKS
    ]
