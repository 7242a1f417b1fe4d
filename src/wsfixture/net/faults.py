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
Healing deletes the table; ``gc`` deletes a table whose owner died (its ledger record).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from wsfixture.errors import FaultError

TABLE_PREFIX = "wsfixture_faults"
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
