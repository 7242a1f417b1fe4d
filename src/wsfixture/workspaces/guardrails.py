"""What a workspace may use and reach, for its handle to show: its allowlist and what that
let through or refused (``net.egress``), whether the OOM killer struck under its memory
bound, and the admission of its memory before anything is made (``host.limits``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from wsfixture.errors import OvercommitError
from wsfixture.host import logcap, settings, virt
from wsfixture.model.config import Config, WorkspaceSpec
from wsfixture.net import egress as egress_rules
from wsfixture.net.lab import Lab

if TYPE_CHECKING:
    from wsfixture.backends.base import Backend


def allowlist_of(config: Config, spec: WorkspaceSpec) -> tuple[str, ...] | None:
    """The destinations ``spec`` may reach, where a list says so: its own, else its
    network's; None: its uplink is open (or it has none)."""
    chosen = config.internet_for(spec)
    return chosen if isinstance(chosen, tuple) else None


def admit(config: Config, spec: WorkspaceSpec, overcommit: bool) -> None:
    """OvercommitError, before anything is made, for memory the host does not have
    available (a VM's as clamped; a container's bound, where it has one)."""
    wanted = config.resources_for(spec).memory
    if wanted is None or overcommit:
        return
    if spec.is_vm:
        wanted = virt.clamp_resources(1, wanted, 1, virt.host_memory_mib())[1]
    available = virt.host_memory_mib("MemAvailable")
    if wanted > available:
        raise OvercommitError(spec.name, wanted, available, "memory")


def egress_record(
    lab: Lab, spec: WorkspaceSpec, allowed: tuple[str, ...], runtime_dir: Path
) -> egress_rules.Record:
    """What an allowlist let through and refused: its resolver's log and the lab's set of
    refused connections, read as they stand."""
    now = time.time()
    log = runtime_dir / settings.EGRESS_LOG
    text = logcap.read_tail(log, 2 * settings.current().log_max).decode(errors="replace")
    resolved, refused_names = egress_rules.read_log(text, now)
    listed = lab.run(["nft", "-j", "list", "set", "ip", "wsfixture", "denied"], False)
    denied, full = (
        egress_rules.read_denied(listed, str(spec.ip), now, resolved) if listed else ([], False)
    )
    every = sorted([*refused_names, *denied], key=lambda d: d.when)
    return egress_rules.Record(allowed, resolved, every, full)


def oom_note(backend: Backend) -> str | None:
    """What a report says once the OOM killer ended one of its processes: "killed: out
    of memory (memory = 512 MiB)"; None until then."""
    facts = backend.limit_facts()
    if not facts["oom_kills"]:
        return None
    return (
        f"killed: out of memory (memory = {facts['memory_mib']} MiB): "
        f"{facts['oom_kills']} process(es) of it"
    )
