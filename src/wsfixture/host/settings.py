"""Where wsfixture keeps things on the host, resolved once.

The environment (``WSFIXTURE_RUN_DIR``, ``WSFIXTURE_LIB_DIR``, ``WSFIXTURE_CACHE_DIR``,
``WSFIXTURE_CACHE_MIN_FREE``, ``WSFIXTURE_MIRROR``) is read the first time ``current()`` is
asked, never at import, and every module asks ``current()`` instead of keeping its own copy.
A test or a benchmark that wants the cache elsewhere says so with ``use(...)`` for the length
of a ``with`` block: in its own context (a ``ContextVar``), so a thread of another test (a
prestart) never sees them, and a thread started in a copy of the block's context does.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from wsfixture.errors import ConfigError, ConfigIssue

GIB = 2**30
# Files of a workspace's runtime directory (and a VM template's), and where ``ip netns``
# looks for a namespace's own /etc: named once here.
CONSOLE_LOG = "console.log"  # what the guest writes to its console (a VM's serial port)
QEMU_LOG = "qemu.log"  # QEMU's own stderr
EGRESS_LOG = "egress-dns.log"  # an allowlisted workspace's resolver's query log
NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")  # where `ip netns` keeps the named namespaces


@dataclass(frozen=True)
class Settings:
    """The host paths wsfixture uses; everything else is derived from these."""

    run_dir: Path = Path("/run/wsfixture")  # the ledger: gone with a reboot, as processes are
    lib_dir: Path = Path("/var/lib/wsfixture")  # labs and supervisor logs
    cache_dir: Path = Path("/var/cache/wsfixture")  # images
    # Bytes to leave free on the cache's filesystem: before it makes an image or a VM
    # template, wsfixture removes cached ones nothing uses until that much is left, so its
    # cache never fills the disk the workspaces (and everything else) write to.
    cache_min_free: int = 10 * GIB
    cgroup_root: Path = Path("/sys/fs/cgroup/unified/wsfixture")
    # systemd-nspawn mirrors each of our cgroups in the v1 name=systemd hierarchy, where
    # the host has one (a hybrid layout); those mirrors are ours to remove too.
    cgroup_v1_root: Path = Path("/sys/fs/cgroup/systemd/wsfixture")
    # Where a hybrid host mounts its v1 controllers (a workspace's limits, host.limits).
    cgroup_v1_controllers: Path = Path("/sys/fs/cgroup")
    # An explicit Debian mirror for image builds, for hosts whose apt reaches Debian through
    # another address than mmdebstrap's default.
    mirror: str | None = None
    # Bytes each log a guest writes (console, serial, query log) is held to, beside the
    # half of it kept in ``<log>.1`` (host.logcap).
    log_max: int = 16 * 2**20

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        default = cls()
        return cls(
            run_dir=Path(environ.get("WSFIXTURE_RUN_DIR", default.run_dir)),
            lib_dir=Path(environ.get("WSFIXTURE_LIB_DIR", default.lib_dir)),
            cache_dir=Path(environ.get("WSFIXTURE_CACHE_DIR", default.cache_dir)),
            cache_min_free=_gib(environ, "WSFIXTURE_CACHE_MIN_FREE", default.cache_min_free),
            mirror=environ.get("WSFIXTURE_MIRROR") or None,
        )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def ledger_dir(self) -> Path:
        return self.run_dir / "ledger"

    @property
    def labs_dir(self) -> Path:
        return self.lib_dir / "labs"

    @property
    def supervisor_logs(self) -> Path:
        return self.lib_dir / "supervisors"

    @property
    def images_dir(self) -> Path:
        return self.cache_dir / "images"

    @property
    def templates_dir(self) -> Path:
        return self.cache_dir / "templates"


def _gib(environ: Mapping[str, str], name: str, default: int) -> int:
    """A size in GiB from the environment, in bytes."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        gib = float(text)
    except ValueError:
        gib = -1.0
    if not 0 <= gib < float("inf"):
        issue = ConfigIssue(name, "not a size in GiB", text, "a number of GiB, 0 or more (10, 2.5)")
        raise ConfigError([issue], source="the environment")
    return int(gib * GIB)


_from_env: Settings | None = None
_used: contextvars.ContextVar[Settings | None] = contextvars.ContextVar(
    "wsfixture_settings", default=None
)


def current() -> Settings:
    """The settings in force: a ``use`` block's, else the environment's, read once."""
    global _from_env
    if (used := _used.get()) is not None:
        return used
    if _from_env is None:
        _from_env = Settings.from_env(os.environ)
    return _from_env


@contextlib.contextmanager
def use(settings: Settings) -> Iterator[Settings]:
    """``settings`` in force for the block (tests, benchmarks) in this context, then the
    previous ones."""
    token = _used.set(settings)
    try:
        yield settings
    finally:
        _used.reset(token)
