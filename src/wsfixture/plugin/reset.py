"""``reset="checkpoint"``: a shared workspace that each test gets clean, by rollback.

A module- or session-scoped workspace saves boots, but each test would see what the one
before left. With ``reset="checkpoint"`` a checkpoint (``RESET_TAG``) is taken when the
workspace is first ready, and every later test starts from a rollback to the newest
checkpoint: a test or fixture that calls ``ws.checkpoint()`` after its own setup (a
database loaded) moves the starting point there. What is in the shares is not rolled
back.

Under ``--ws-keep=failed``, the state a failed test left is saved as a checkpoint
(``failed-<n>``) before the next test rolls back, and the workspace is returned to it
before it is kept: the kept workspace is what the failed test saw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsfixture.workspaces import Workspace

RESET_CHOICES = ("none", "checkpoint")
RESET_TAG = "reset"
FAILED_PREFIX = "failed-"

logger = logging.getLogger("wsfixture.plugin")


@dataclass
class SharedReset:
    """The reset state of one shared workspace."""

    ws: Workspace
    tests: int = 0  # tests that used it so far
    kept_failure: str | None = None  # the checkpoint of the first failed test's state
    last_failed: bool = False

    def before_test(self) -> None:
        """The first test: take the starting checkpoint. Later ones: roll back to the
        newest checkpoint that is not a failed test's."""
        self.tests += 1
        if self.tests == 1:
            self.ws.checkpoint(RESET_TAG)
            return
        starts = [c for c in self.ws.checkpoints() if not c.tag.startswith(FAILED_PREFIX)]
        self.ws.rollback(starts[-1] if starts else self.ws.checkpoint(RESET_TAG))

    def after_test(self, failed: bool, keep_failed: bool) -> None:
        """Save a failed test's state, if the workspace is to be kept for it."""
        self.last_failed = failed
        if failed and keep_failed and self.kept_failure is None:
            self.kept_failure = f"{FAILED_PREFIX}{self.tests}"
            self.ws.checkpoint(self.kept_failure)

    def before_keep(self) -> None:
        """Return the workspace to the failed test's state, if a later test moved it on."""
        if self.kept_failure is not None and not self.last_failed:
            logger.info("%s: rolling back to %s before it is kept", self.ws.name, self.kept_failure)
            self.ws.rollback(self.kept_failure)
