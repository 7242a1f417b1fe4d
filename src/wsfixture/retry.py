"""The one deadline loop: call a check until it answers or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_INTERVAL = 0.05


def retry_until(
    check: Callable[[bool], T | None], timeout: float, interval: float = POLL_INTERVAL
) -> T | None:
    """Call ``check(last_try)`` until it returns something other than None, or time runs out.

    ``last_try`` is True on the final call, so the check can gather diagnostics then.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = time.monotonic() + interval >= deadline
        result = check(last)
        if result is not None or last:
            return result
        time.sleep(interval)
