"""Releasing many things at once: every step is attempted whatever the others did, and
every failure is kept and raised at the end as one CleanupError, never swallowed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wsfixture.errors import CleanupError

Failure = tuple[str, BaseException]


class Cleanup:
    """The failures of one release, step by step."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def attempt(self, what: str, action: Callable[..., object], *args: Any) -> None:
        """Run ``action(*args)``; a failure is noted under ``what``, and the release goes on."""
        try:
            action(*args)
        except Exception as exc:
            self.failures.append((what, exc))

    def add(self, failures: Iterable[Failure]) -> None:
        """Failures another release collected (a ledger record's, a background stop's)."""
        self.failures += failures

    def raise_any(self) -> None:
        if self.failures:
            raise CleanupError(self.failures)
