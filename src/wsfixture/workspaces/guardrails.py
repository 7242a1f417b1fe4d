"""What a workspace may use and reach, as its handle shows it: its allowlist and what that
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


class Guardrails:
    """Mixed into ``Workspace``: what it reads of the handle is declared here."""

    spec: WorkspaceSpec
    config: Config
    lab: Lab
    runtime_dir: Path
    backend: Backend | None
    overcommit: bool

    @property
    def allowlist(self) -> tuple[str, ...] | None:
        """The destinations it may reach, where a list says so: its own, else its network's;
        None: its uplink is open (or it has none)."""
        own, lab_wide = self.spec.internet, self.config.network.internet
        if isinstance(own, tuple):
            return own
        return lab_wide if own is None and isinstance(lab_wide, tuple) else None

    def _admit(self) -> None:
        """OvercommitError, before anything is made, for memory the host does not have
        available (a VM's as clamped; a container's bound, where it has one)."""
        wanted = self.config.resources_for(self.spec).memory
        if wanted is None or self.overcommit:
            return
        if self.spec.is_vm:
            wanted = virt.clamp_resources(1, wanted, 1, virt.host_memory_mib())[1]
        available = virt.host_memory_mib("MemAvailable")
        if wanted > available:
            raise OvercommitError(self.spec.name, wanted, available, "memory")

    def egress(self) -> egress_rules.Record | None:
        """What its allowlist let through and refused: the names that resolved (and their
        addresses), and every refused connection and name, oldest first (``net.egress``).
        None: it has no allowlist."""
        allowed = self.allowlist
        if allowed is None:
            return None
        now = time.time()
        log = self.runtime_dir / "egress-dns.log"
        text = logcap.read_tail(log, 2 * settings.current().log_max).decode(errors="replace")
        resolved, refused_names = egress_rules.read_log(text, now)
        listed = self.lab.run(["nft", "-j", "list", "set", "ip", "wsfixture", "denied"], False)
        denied, full = (
            egress_rules.read_denied(listed, str(self.spec.ip), now, resolved)
            if listed
            else ([], False)
        )
        every = sorted([*refused_names, *denied], key=lambda d: d.when)
        return egress_rules.Record(allowed, resolved, every, full)

    def out_of_memory(self) -> str | None:
        """What a report says once the OOM killer ended one of its processes: "killed: out
        of memory (memory = 512 MiB)"; None until then."""
        if self.backend is None:
            return None
        facts = self.backend.limit_facts()
        if not facts["oom_kills"]:
            return None
        return (
            f"killed: out of memory (memory = {facts['memory_mib']} MiB): "
            f"{facts['oom_kills']} process(es) of it"
        )
