"""Faults between workspaces, in the lab namespace: pure, the nftables text and the checks
of what a test asks for.

Every workspace's frames cross the lab bridge, and frames from one workspace to another
are *forwarded* by it (the bridge family's ``forward`` hook), while the test's own channel
to a workspace (its SSH session, from a socket in the lab namespace) goes *to* the bridge
device and back (``input``/``output``): a fault in ``forward`` breaks what workspaces say
to each other and never the test's channel. Nothing is matched on connection state, so a
TCP stream already established is cut the moment a fault starts (its packets are dropped
like any other), and carries on, or resets, once healed.

One table per set of faults (a ``ws_faults`` fixture, a CLI lab's faults), in the lab:
- ``blocked``: (source, destination) address pairs whose IPv4 packets are dropped; a
  partition is every pair across its groups, both ways; ``block(a, b)`` one way;
- ``silenced``: the pairs blocked both ways, whose ARP is dropped too (so a partition
  exchanges no frame at all; a one-way block keeps ARP, or the other way could not
  resolve its peer either);
- ``shaped``: loss rules, ``numgen random`` drops (no qdisc: every kernel has them).

What a table of rules cannot do has its own place, named after the table, in the same lab:
- delay and jitter: an iptables chain (``queue_chain``) in ``FORWARD`` that hands what a
  workspace sends its peers to an NFQUEUE queue, where a delayer holds each packet for its
  time (``net.fault_agent``); bridged frames reach iptables through ``br_netfilter``. No
  kernel qdisc is needed (this one has no ``sch_netem``), and it is the same for containers
  and VMs, outside the guest;
- rate: an HTB class on the workspace's bridge port (what it receives) and on an IFB
  device that the port's ingress is redirected to (what it sends), in the kernel;
- DNS: an ``ip`` table whose prerouting chains drop a failed name's queries to the lab's
  resolver (``timeout``) or redirect them to a responder that fails them (``nxdomain``,
  ``servfail``), matched on the question's bytes, letters in either case.
The test's own channel and DNS go to the gateway, never across these. Healing deletes all
of it; ``gc`` does the same for a set whose owner died (its ledger record).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from wsfixture.errors import FaultError
from wsfixture.model import derive
from wsfixture.net import dnswire

TABLE_PREFIX = derive.FAULTS_TABLE_PREFIX
LOSS_SCALE = 10_000  # loss in hundredths of a percent: 0.01 % steps


def table_name(owner_pid: int, serial: int) -> str:
    return f"{TABLE_PREFIX}_{owner_pid}_{serial}"


def table(name: str) -> str:
    """The table that holds one set of faults, with none in it yet."""
    return f"""\
table bridge {name} {{
  set blocked {{ type ipv4_addr . ipv4_addr; }}
  set silenced {{ type ipv4_addr . ipv4_addr; }}
  chain forward {{
    type filter hook forward priority -50; policy accept;
    ether type ip ip saddr . ip daddr @blocked drop
    ether type arp arp saddr ip . arp daddr ip @silenced drop
    jump shaped
  }}
  chain shaped {{
  }}
}}
"""


def blocked(name: str, pairs: Sequence[tuple[str, str]]) -> str:
    """The nft commands that make exactly ``pairs`` blocked (and those blocked both ways
    silenced), in place of what was."""
    batch = f"flush set bridge {name} blocked\nflush set bridge {name} silenced\n"
    known = set(pairs)
    both = [(src, dst) for src, dst in pairs if (dst, src) in known]
    for set_name, members in (("blocked", pairs), ("silenced", both)):
        if members:
            elements = ", ".join(f"{src} . {dst}" for src, dst in members)
            batch += f"add element bridge {name} {set_name} {{ {elements} }}\n"
    return batch


def loss_rules(name: str, ip: str, peer: str | None, percent: float) -> str:
    """Drop ``percent`` of what ``ip`` sends and of what it receives (from and to
    ``peer`` only, if given)."""
    threshold = round(percent * LOSS_SCALE / 100)
    chance = f"numgen random mod {LOSS_SCALE} < {threshold} drop"
    sent = f"ip saddr {ip}" + (f" ip daddr {peer}" if peer else "")
    received = f"ip daddr {ip}" + (f" ip saddr {peer}" if peer else "")
    return "".join(f"add rule bridge {name} shaped ether type ip {match} {chance}\n"
                   for match in (sent, received))  # fmt: skip


def partition_pairs(groups: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """Every (source, destination) between two different groups, both ways."""
    pairs = []
    for i, group in enumerate(groups):
        for other in groups[i + 1 :]:
            for a in group:
                for b in other:
                    pairs += [(a, b), (b, a)]
    return pairs


def check_groups(groups: Sequence[Sequence[str]]) -> None:
    """At least two groups, each named once, none empty (names, not addresses)."""
    if len(groups) < 2:
        raise FaultError("partition", f"{len(groups)} group(s)", "two groups or more")
    seen: set[str] = set()
    for group in groups:
        if not group:
            raise FaultError("partition", "an empty group", "one workspace or more per group")
        for name in group:
            if name in seen:
                raise FaultError("partition", f"{name!r} in two groups", "each workspace once")
            seen.add(name)


PERCENT_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*%?\s*$")


def parse_loss(value: float | int | str) -> float:
    """Loss in percent, 0 to 100 (``10``, ``2.5``, ``"10%"``)."""
    number = _number(value, PERCENT_RE)
    if number is None or not 0 <= number <= 100:
        raise FaultError("loss", repr(value), 'a percentage from 0 to 100 (10, 2.5, "10%")')
    return number


def _number(value: object, pattern: re.Pattern[str]) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (match := pattern.match(value)):
        return float(match.group(1))
    return None


DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?\s*$", re.IGNORECASE)
MAX_DELAY_MS = 60_000.0


def parse_duration(argument: str, value: float | int | str) -> float:
    """Milliseconds, 0 to a minute: ``100``, ``2.5``, ``"100ms"``, ``"0.1s"``."""
    match = DURATION_RE.match(value) if isinstance(value, str) else None
    number: float | None = None
    if match:
        number = float(match.group(1)) * (1000 if (match.group(2) or "").lower() == "s" else 1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    if number is None or not 0 <= number <= MAX_DELAY_MS:
        raise FaultError(argument, repr(value), "milliseconds from 0 to 60000 "
                         '(100, 2.5, "100ms", "0.1s")')  # fmt: skip
    return number


RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(bit|kbit|mbit|gbit)?\s*$", re.IGNORECASE)
RATE_UNITS = {"": 1, "bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
MIN_RATE, MAX_RATE = 8_000, 10**11  # 1 kB/s to 100 Gbit/s


def parse_rate(value: float | int | str) -> int:
    """Bits per second: ``1000000``, ``"1mbit"``, ``"512kbit"`` (tc's units)."""
    match = RATE_RE.match(value) if isinstance(value, str) else None
    number: float | None = None
    if match:
        number = float(match.group(1)) * RATE_UNITS[(match.group(2) or "").lower()]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    if number is None or not MIN_RATE <= number <= MAX_RATE:
        raise FaultError("rate", repr(value), "bits per second from 8000 to 100gbit "
                         '(1000000, "512kbit", "1mbit")')  # fmt: skip
    return round(number)


def show_rate(bits: int) -> str:
    """``bits`` per second as tc writes it: ``1mbit``, ``512kbit``, ``1500bit``."""
    for unit in ("gbit", "mbit", "kbit"):
        if bits % RATE_UNITS[unit] == 0:
            return f"{bits // RATE_UNITS[unit]}{unit}"
    return f"{bits}bit"


# What the lab's resolver does with a failed name: the code a responder answers with, or
# None for no answer at all.
DNS_MODES: dict[str, int | None] = {
    "nxdomain": dnswire.NXDOMAIN, "servfail": dnswire.SERVFAIL, "timeout": None,
}  # fmt: skip


def check_dns(name: str, mode: str) -> bytes:
    """``name`` as its queries carry it; FaultError for a name or mode that cannot be."""
    if mode not in DNS_MODES:
        raise FaultError("mode", repr(mode), ", ".join(DNS_MODES))
    try:
        return dnswire.encode_name(name)
    except ValueError:
        raise FaultError("name", repr(name), "a DNS name (labels of letters, digits, - and "
                         "_, 255 bytes at most)") from None  # fmt: skip


QUESTION_BIT = (8 + dnswire.HEADER.size) * 8  # a UDP query's name, from the UDP header on
CHUNK = 16  # bytes an nftables raw payload match compares at once


def question_match(wire: bytes) -> str:
    """nftables matches for a UDP query whose question is the name ``wire``, letters in
    either case (bit 0x20 masked out of them alone)."""
    matches = []
    for start in range(0, len(wire), CHUNK):
        part = wire[start : start + CHUNK]
        # A length byte is at most 63, below every letter: a letter is a name's.
        mask = bytes(0xDF if chr(b).isascii() and chr(b).isalpha() else 0xFF for b in part)
        value = bytes(b & m for b, m in zip(part, mask, strict=True))
        bits = f"@th,{QUESTION_BIT + start * 8},{len(part) * 8}"
        masked = "" if all(m == 0xFF for m in mask) else f" & 0x{mask.hex()}"
        matches.append(f"{bits}{masked} == 0x{value.hex()}")
    return " ".join(matches)


@dataclass(frozen=True)
class DnsFailure:
    """Queries for ``wire`` fail: redirected to the responder at ``port``, or dropped."""

    wire: bytes
    port: int | None


def dns_table(name: str, bridge: str, gateway: str, failures: Sequence[DnsFailure]) -> str:
    """The ``ip`` table (made anew) that fails the queries of ``failures`` to the lab's
    resolver: dropped before anything else sees them, or redirected before the lab's own
    redirection (egress) takes them."""
    to_resolver = f'iifname "{bridge}" ip daddr {gateway} udp dport 53'
    dropped = "".join(f"    {to_resolver} {question_match(f.wire)} drop\n"
                      for f in failures if f.port is None)  # fmt: skip
    redirected = "".join(f"    {to_resolver} {question_match(f.wire)} redirect to :{f.port}\n"
                         for f in failures if f.port is not None)  # fmt: skip
    return f"""\
table ip {name}
delete table ip {name}
table ip {name} {{
  chain dns_dropped {{
    type filter hook prerouting priority mangle; policy accept;
{dropped}  }}
  chain dns_redirected {{
    type nat hook prerouting priority dstnat - 10; policy accept;
{redirected}  }}
}}
"""


@dataclass(frozen=True)
class Delay:
    """What ``ip`` sends (to ``peer`` only, or to every workspace) goes through ``queue``."""

    ip: str
    peer: str | None
    queue: int


def delay_rules(chain: str, subnet: str, delays: Sequence[Delay]) -> str:
    """``iptables-restore --noflush`` input: ``chain`` made anew, reached from ``FORWARD``
    once, with a queue rule per delay. ``--queue-bypass``: packets pass if no delayer
    holds the queue (it died), rather than being dropped."""
    rules = "".join(
        f"-A {chain} -s {d.ip}/32 -d {d.peer or subnet} "
        f"-j NFQUEUE --queue-num {d.queue} --queue-bypass\n"
        for d in sorted(delays, key=lambda d: d.peer is None)  # one peer's before anyone's
    )
    return f"*filter\n:{chain} - [0:0]\n{rules}COMMIT\n"


@dataclass(frozen=True)
class Rate:
    """What ``ip`` sends and receives (to and from ``peer`` only, or every workspace) is
    held to ``bits`` per second."""

    ip: str
    peer: str | None
    bits: int


def rate_batch(port: str, gateway: str, subnet: str, rates: Sequence[Rate]) -> str:
    """``tc -batch`` input that shapes ``port``: its egress (to the workspace) by source,
    its ingress (from it) redirected to its IFB device and shaped there by destination.
    The gateway's traffic (the test's channel, DNS) is classified first, to no class: it
    passes unshaped."""
    ifb = derive.ifb_name(port)
    ordered = sorted(rates, key=lambda r: r.peer is None)  # one peer's before anyone's
    batch = f"qdisc add dev {port} handle ffff: ingress\n"
    batch += f"filter add dev {port} parent ffff: protocol ip prio 1 u32 match ip dst " \
             f"{gateway}/32 flowid ffff:1\n"  # fmt: skip
    batch += (f"filter add dev {port} parent ffff: protocol ip prio 2 u32 match ip dst {subnet} "
              f"action mirred egress redirect dev {ifb}\n")  # fmt: skip
    for device, field in ((port, "src"), (ifb, "dst")):
        batch += f"qdisc add dev {device} root handle 1: htb\n"
        batch += (f"filter add dev {device} parent 1: protocol ip prio 1 u32 match ip {field} "
                  f"{gateway}/32 flowid 1:0\n")  # fmt: skip
        for index, rate in enumerate(ordered):
            classid = f"1:{10 + index}"
            batch += f"class add dev {device} parent 1: classid {classid} htb rate {rate.bits}bit\n"
            batch += (f"filter add dev {device} parent 1: protocol ip prio {2 + index} u32 "
                      f"match ip {field} {rate.peer or subnet} flowid {classid}\n")  # fmt: skip
    return batch
