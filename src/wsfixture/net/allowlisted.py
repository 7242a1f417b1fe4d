"""A workspace held to its allowlist in its lab (``net.egress`` has the rules): its own
resolver, which answers the names the list allows and logs every question, then the lab's
rules for its address; and both lifted again."""

from __future__ import annotations

import subprocess
from pathlib import Path

from wsfixture.host import ledger, system
from wsfixture.model import allowlist
from wsfixture.net import dns, egress
from wsfixture.net.lab import Lab


def hold(
    lab: Lab, ip: str, entries: tuple[str, ...], record: ledger.Record, log: Path
) -> subprocess.Popen[bytes]:
    """Hold workspace ``ip`` to its allowlist: its own resolver, then its rules. Returns
    the resolver, a process listed in ``record``."""
    assert lab.uplink is not None, "check_internet refuses an allowlist without uplink"
    allowed = allowlist.destinations(entries)
    gateway = str(lab.network.gateway)
    port = egress.resolver_port(ip, lab.network.subnet)
    argv = egress.resolver_argv(
        system.require_tool("dnsmasq"), ip, gateway, port, allowed, str(lab.uplink.dns),
        lab.etc_dir, log,
    )  # fmt: skip
    resolver = dns.start_process(lab, argv, log, lab.die_with_owner)
    ref = system.ProcessRef.of(resolver.pid)
    if ref is not None:
        record.add_process(ref)
    dns.wait_answering(lab, resolver, gateway, port, log)
    lab.run(["nft", "-f", "-"], input=egress.restrict(ip, gateway, port, allowed))
    return resolver


def release(lab: Lab, ip: str, entries: tuple[str, ...]) -> None:
    """Remove ``hold``'s rules (the caller ends the resolver)."""
    port = egress.resolver_port(ip, lab.network.subnet)
    batch = egress.unrestrict(ip, str(lab.network.gateway), port, allowlist.destinations(entries))
    lab.run(["nft", "-f", "-"], input=batch, check=False)
