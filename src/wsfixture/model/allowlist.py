"""Egress allowlists, pure: what an entry of ``internet = [...]`` means.

An entry is a domain name (``"github.com"``: the name and its subdomains;
``"*.example.com"``: subdomains only), an IPv4 network or address (``"198.51.100.0/24"``,
``"198.51.100.7"``), either one with a port (``"pypi.org:443"``: TCP and UDP to that port
only). IPv6 has no route out of a lab at all, so no entry names it.

Refused, because they could never mean what they say: a network that covers every private
range at once (``0.0.0.0/0`` and anything up to a /7: the whole internet is ``internet =
true``), and a port of DNS (53, 853): a held workspace's DNS goes to its own resolver, and
DNS anywhere else is refused before the list is read.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DOMAIN_RE = re.compile(
    r"^(\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
ENTRY_RE = re.compile(r"^(?P<host>[^:]+)(?::(?P<port>[0-9]+))?$")
ALLOWED = (
    'a domain ("github.com"; "*.example.com" for subdomains only) or an IPv4 network '
    '("198.51.100.0/24", "198.51.100.7"), optionally with a port from 1 to 65535 '
    '("pypi.org:443")'
)


DNS_PORTS = (53, 853)
WIDEST_PREFIX = 8  # a /7 or wider covers 10/8 with the rest, and means "everything"


@dataclass(frozen=True)
class Destination:
    """One allowed destination."""

    domain: str | None = None  # without a leading "*."
    subdomains_only: bool = False
    network: ipaddress.IPv4Network | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = (
            f"{'*.' if self.subdomains_only else ''}{self.domain}"
            if self.domain
            else str(self.network)
        )
        return f"{host}:{self.port}" if self.port else host


def parse(text: str) -> Destination | str:
    """The destination ``text`` names, or what is wrong with it."""
    match = ENTRY_RE.match(text.strip().lower())
    if match is None:
        return "is neither a domain nor an IPv4 network"
    host, port_text = match.group("host"), match.group("port")
    port = int(port_text) if port_text else None
    if port is not None and not 1 <= port <= 65535:
        return "has a port out of range"
    if port in DNS_PORTS:
        return (f"names port {port}, DNS's: a held workspace's DNS goes to its own resolver "
                "(list the domains it may resolve instead)")  # fmt: skip
    if re.fullmatch(r"[0-9./]+", host):
        try:
            network = ipaddress.IPv4Network(host, strict=True)
        except ValueError:
            return "is neither a domain nor an IPv4 network (host bits set, or not an address)"
        if network.prefixlen < WIDEST_PREFIX:
            return (f"covers every private range at once (a /{network.prefixlen}); for the "
                    "whole internet, internet = true")  # fmt: skip
        return Destination(network=network, port=port)
    if not DOMAIN_RE.match(host):
        return "is neither a domain nor an IPv4 network"
    subdomains_only = host.startswith("*.")
    return Destination(domain=host.removeprefix("*."), subdomains_only=subdomains_only, port=port)


def destinations(entries: tuple[str, ...]) -> list[Destination]:
    """The entries of a validated allowlist (each one parses)."""
    parsed = [parse(entry) for entry in entries]
    return [d for d in parsed if isinstance(d, Destination)]
