"""The backends: one per workspace ``type``, behind ``base.Backend``.

``REGISTRY`` names each kind's class by module, imported when first asked for (a
container-only run never imports QEMU's modules); each class carries its own ready and
stop timeouts. An unknown kind is an error, never a default.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from wsfixture.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from wsfixture.backends.base import Backend

REGISTRY = {  # a workspace ``type`` -> "module:class"
    "container": "wsfixture.backends.nspawn:NspawnBackend",
    "vm": "wsfixture.backends.qemu:QemuBackend",
}


def backend_class(kind: str) -> type[Backend]:
    """The backend of a workspace ``type``; ConfigError naming the kinds for another."""
    if kind not in REGISTRY:
        allowed = ", ".join(REGISTRY)
        raise ConfigError([ConfigIssue("type", "is not a workspace type", kind, allowed)])
    module, name = REGISTRY[kind].split(":")
    found: type[Backend] = getattr(importlib.import_module(module), name)
    return found
