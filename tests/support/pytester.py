"""What the plugin's tests share: the config their pytester sessions read, and what they
look for in a session's output and on the machine afterwards."""

from __future__ import annotations

import re
from pathlib import Path

from wsfixture.host import settings

CONFIG = """
[workspaces.alpha]
type = "container"
ip = "192.168.83.10"
packages = []
"""


def labs_in(output: str) -> set[str]:
    """The lab names a session's output mentions."""
    return set(re.findall(r"wsf-[0-9a-f]{10}-\w+", output))


def ledger_files() -> list[Path]:
    """The ledger's records now: a session leaves none of its own behind."""
    directory = settings.current().ledger_dir
    return sorted(directory.glob("*.json")) if directory.is_dir() else []
