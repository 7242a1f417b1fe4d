"""Egress allowlists, enforced in the lab's network namespace, never in the guest, so root
in a workspace cannot lift them. Pure: the nftables text and dnsmasq's command line.

A workspace with an allowlist gets, in the lab's ``ip wsfixture`` table (``uplink``):
- a chain of its own, reached from the forward chain through the ``egress`` verdict map:
  DNS and DNS-over-TLS to anywhere refused; its networks accepted; private and link-local
  ranges refused unless a network of its list names them; the addresses its listed names
  resolved to accepted; everything else refused at once (a TCP reset, or ICMP
  administratively prohibited), and recorded in the ``denied`` set;
- a resolver of its own: dnsmasq on the gateway at a port of its own, to which its queries
  to the gateway are redirected (the ``dns_to`` map). It forwards only the listed domains,
  refuses every other outside name, and adds each answer's addresses to that name's set
  (``--nftset``). The lab's names it answers as the lab's resolver does.

Sets of resolved addresses have no timeout: an address stays allowed while the workspace
runs, longer than any cache may hold it, and a name whose addresses change (a CDN) adds the
new ones as they are resolved. IPv6 has no route out of a lab (the uplink is IPv4 only).
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from wsfixture.model.allowlist import Destination

# Refused to an allowlisted workspace unless one of its networks names them.
PRIVATE = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
DNS_PORTS = "{ 53, 853 }"
DENIED_TIMEOUT = "1h"  # how long a denial stays on record
DENIED_SIZE = 65536  # entries the record holds; a full record says so (``Record.note``)
RESOLVER_PORT_BASE = 20000
# Every workspace of a lab reaches its resolvers: they drop root once their files are open
# (a resolver's nftset keeps CAP_NET_ADMIN, all it needs; nothing else of root's).
UNPRIVILEGED = ("--user=nobody", "--group=nogroup")
# The lab's resolver for its offline workspaces: lab names only, no upstream. At the
# subnet's network address's port, which is never a workspace's.
OFFLINE_RESOLVER_PORT = RESOLVER_PORT_BASE


def scaffold(bridge: str, gateway: str) -> str:
    """What every lab with an uplink has for allowlists and offline workspaces (inside
    ``table ip wsfixture``): the maps, the ``denied`` record (every protocol: ICMP and the
    rest with port 0), the ``deny`` chain, the DNS redirection, and the lab namespace's
    input filter: a resolver port (``RESOLVER_PORT_BASE`` and up) answers only the
    workspace it is for (the ``resolvers`` set), so no workspace reads another's
    allowlist or uses another's upstream."""
    return f"""\
  map egress {{ type ipv4_addr : verdict; }}
  map dns_to {{ type ipv4_addr : ipv4_addr . inet_service; }}
  set resolvers {{ type ipv4_addr . inet_service; }}
  set denied {{
    type ipv4_addr . ipv4_addr . inet_proto . inet_service
    flags dynamic, timeout; timeout {DENIED_TIMEOUT}; size {DENIED_SIZE}
  }}
  chain deny {{
    meta l4proto {{ tcp, udp }} update @denied {{ ip saddr . ip daddr . meta l4proto . th dport }}
    meta l4proto != {{ tcp, udp }} update @denied {{ ip saddr . ip daddr . meta l4proto . 0 }}
    counter
    meta l4proto tcp reject with tcp reset
    reject with icmp type admin-prohibited
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname != "{bridge}" accept
    ct state established,related accept
    meta l4proto {{ tcp, udp }} ip saddr . th dport @resolvers accept
    meta l4proto {{ tcp, udp }} th dport >= {RESOLVER_PORT_BASE} counter drop
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{bridge}" ip daddr {gateway} udp dport 53 dnat ip to ip saddr map @dns_to
    iifname "{bridge}" ip daddr {gateway} tcp dport 53 dnat ip to ip saddr map @dns_to
  }}
"""


def forward_rule(bridge: str, uplink_interface: str) -> str:
    """The forward chain's rule that sends an allowlisted workspace to its own chain."""
    return f'iifname "{bridge}" oifname "{uplink_interface}" ip saddr vmap @egress'


def chain_name(ip: str) -> str:
    return "e_" + ip.replace(".", "_")


def name_set(ip: str, index: int) -> str:
    return f"n_{ip.replace('.', '_')}_{index}"


def resolver_port(ip: str, subnet: ipaddress.IPv4Network) -> int:
    """Where a workspace's own resolver listens on the gateway: one port per address."""
    return RESOLVER_PORT_BASE + int(ipaddress.IPv4Address(ip)) - int(subnet.network_address)


def _ports(destination: Destination) -> str:
    port = destination.port
    return f"meta l4proto {{ tcp, udp }} th dport {port} " if port else ""


def restrict(ip: str, gateway: str, port: int, allowed: list[Destination]) -> str:
    """The nft batch that holds workspace ``ip`` to ``allowed``."""
    table, chain = "ip wsfixture", chain_name(ip)
    lines = [f"add chain {table} {chain}"]
    lines += [f"add set {table} {name_set(ip, i)} {{ type ipv4_addr; }}"
              for i, d in enumerate(allowed) if d.domain]  # fmt: skip
    rule = f"add rule {table} {chain}"
    lines.append(f"{rule} meta l4proto {{ tcp, udp }} th dport {DNS_PORTS} goto deny")
    lines += [f"{rule} ip daddr {d.network} {_ports(d)}accept" for d in allowed if d.network]
    lines.append(f"{rule} ip daddr {{ {', '.join(PRIVATE)} }} goto deny")
    lines += [f"{rule} ip daddr @{name_set(ip, i)} {_ports(d)}accept"
              for i, d in enumerate(allowed) if d.domain]  # fmt: skip
    lines.append(f"{rule} goto deny")
    lines.append(f"add element {table} egress {{ {ip} : jump {chain} }}")
    lines += resolver_elements("add", ip, gateway, port)
    return "\n".join(lines) + "\n"


def resolver_elements(verb: str, ip: str, gateway: str, port: int) -> list[str]:
    """The nft commands that send workspace ``ip``'s DNS to the gateway's ``port`` and
    let only it in there (``verb``: add), or stop both (delete)."""
    value = f" : {gateway} . {port}" if verb == "add" else ""
    return [
        f"{verb} element ip wsfixture dns_to {{ {ip}{value} }}",
        f"{verb} element ip wsfixture resolvers {{ {ip} . {port} }}",
    ]


def unrestrict(ip: str, gateway: str, port: int, allowed: list[Destination]) -> str:
    """The nft batch that removes what ``restrict`` added."""
    table, chain = "ip wsfixture", chain_name(ip)
    lines = [
        f"delete element {table} egress {{ {ip} }}",
        *resolver_elements("delete", ip, gateway, port),
        f"flush chain {table} {chain}",
        f"delete chain {table} {chain}",
    ]
    lines += [f"delete set {table} {name_set(ip, i)}"
              for i, d in enumerate(allowed) if d.domain]  # fmt: skip
    return "\n".join(lines) + "\n"


def resolver_argv(
    dnsmasq: str, ip: str, gateway: str, port: int, allowed: list[Destination],
    upstream: str, hosts_dir: Path, log: Path,
) -> list[str]:  # fmt: skip
    """dnsmasq for one allowlisted workspace: listed domains only, answers into sets."""
    argv = [
        dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--no-poll", f"--hostsdir={hosts_dir}", f"--listen-address={gateway}", f"--port={port}",
        "--bind-interfaces", *UNPRIVILEGED, "--log-queries", f"--log-facility={log}",
    ]  # fmt: skip
    for index, d in enumerate(allowed):
        if d.domain is None:
            continue
        pattern = f"*.{d.domain}" if d.subdomains_only else d.domain
        argv += [f"--server=/{pattern}/{upstream}",
                 f"--nftset=/{pattern}/4#ip#wsfixture#{name_set(ip, index)}"]  # fmt: skip
    return argv


# -- what was allowed and denied -----------------------------------------------------------

LOG_LINE = re.compile(r"^(?P<when>\w{3} +\d+ \d\d:\d\d:\d\d) dnsmasq\[\d+\]: (?P<what>.*)$")


@dataclass(frozen=True)
class Denial:
    """One refused connection (address, protocol, port) or refused name (``name`` only)."""

    when: float  # seconds since the epoch
    address: str | None
    protocol: str | None
    port: int | None
    name: str | None  # the name asked for, where one resolved to the address

    def __str__(self) -> str:
        if self.address is None:
            return f"name {self.name}: refused (not in the allowlist)"
        asked = f" ({self.name})" if self.name else ""
        port = f"/{self.port}" if self.protocol in ("tcp", "udp") else ""
        return f"{self.address}{asked} {self.protocol}{port}: refused"


@dataclass(frozen=True)
class Record:
    """What an allowlisted workspace asked for: the names that resolved (with their
    addresses), and every denial, oldest first."""

    allowlist: tuple[str, ...]
    resolved: dict[str, list[str]]
    denied: list[Denial]
    full: bool = False  # the lab's record of refusals is full: newer ones were not kept

    def as_data(self) -> dict[str, object]:
        """The record as JSON takes it (``wsfixture egress --json``, the MCP tool)."""
        return {
            "allowlist": list(self.allowlist),
            "resolved": self.resolved,
            "denied": [asdict(d) for d in self.denied],
            "full": self.full,
        }

    @property
    def note(self) -> str | None:
        if not self.full:
            return None
        return (
            f"the lab's record of refused connections is full ({DENIED_SIZE} entries, each "
            f"kept {DENIED_TIMEOUT}): refusals since were enforced, not recorded"
        )


def _when(stamp: str, now: float) -> float:
    """A syslog-style stamp (no year) as epoch seconds: this year's, or last year's when
    that would be in the future."""
    year = time.localtime(now).tm_year
    when = time.mktime(time.strptime(f"{year} {stamp}", "%Y %b %d %H:%M:%S"))
    return when if when <= now + 60 else time.mktime(
        time.strptime(f"{year - 1} {stamp}", "%Y %b %d %H:%M:%S")
    )  # fmt: skip


def read_log(text: str, now: float) -> tuple[dict[str, list[str]], list[Denial]]:
    """From a resolver's query log: each name that resolved and its addresses; each name
    refused (asked, then answered REFUSED by its config)."""
    resolved: dict[str, list[str]] = {}
    refused: list[Denial] = []
    refused_names: set[str] = set()  # one denial a name: a set, or 49k names take a minute
    asked: str | None = None
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match is None:
            continue
        what = match.group("what")
        if what.startswith("query["):
            asked = what.split("]", 1)[1].split(" from ", 1)[0].strip()
        elif what.startswith("config ") and "is REFUSED" in what and asked:
            if asked not in refused_names:
                refused_names.add(asked)
                refused.append(Denial(_when(match.group("when"), now), None, None, None, asked))
        elif what.startswith("reply ") and " is " in what:
            name, _, address = what.removeprefix("reply ").partition(" is ")
            if re.fullmatch(r"[0-9.]+", address):
                found = resolved.setdefault(name, [])
                if address not in found:
                    found.append(address)
    return resolved, refused


def read_denied(
    nft_json: str, ip: str, now: float, names: dict[str, list[str]]
) -> tuple[list[Denial], bool]:
    """``ip``'s entries of the ``denied`` set (``nft -j list set``), each with when it was
    last refused and the name that resolved to its address, if one did; and whether the
    set is full (a refusal then goes unrecorded)."""
    by_address = {address: name for name, found in names.items() for address in found}
    denied = []
    entries = 0
    for item in json.loads(nft_json).get("nftables", []):
        for element in item.get("set", {}).get("elem", []):
            entries += 1
            inner = element.get("elem", {})
            source, address, protocol, port = inner.get("val", {}).get("concat", [None] * 4)
            if source != ip:
                continue
            expires = inner.get("expires", 0)
            when = now - (inner.get("timeout", 3600) - expires)
            denied.append(Denial(when, address, protocol, port, by_address.get(address)))
    return denied, entries >= DENIED_SIZE
