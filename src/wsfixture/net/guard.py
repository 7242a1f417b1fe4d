"""Anti-spoofing on the lab bridge: each workspace's port speaks only as that workspace.

A workspace's root can set any address and MAC on its interface and announce it with a
gratuitous ARP; without a filter the bridge then sends a neighbour's traffic to it. Each
port (a container's veth, a VM's TAP) gets a chain in an nftables ``bridge`` table of the
lab, in the prerouting hook (before the bridge forwards or delivers a frame): frames from
another MAC, ARP that claims another MAC or address, and IPv4 from another address are
dropped, and so is every other protocol but IPv6 (whose frames still carry the port's own
MAC: a VLAN tag would hide an ARP from the checks). ARP probes (sender 0.0.0.0, sent by
networkd's address conflict detection) pass. Pure text here; ``Lab`` runs it.
"""

from __future__ import annotations

TABLE = "wsfixture_guard"


def table() -> str:
    """The table with its dispatch: a port's frames jump to the port's chain."""
    return (
        f"table bridge {TABLE} {{\n"
        "  map ports { type ifname : verdict; }\n"
        "  chain prerouting {\n"
        "    type filter hook prerouting priority filter; policy accept;\n"
        "    iifname vmap @ports\n"
        "  }\n"
        "}\n"
    )


def _chain(ifname: str) -> str:
    return f"port-{ifname}"


def add_port(ifname: str, mac: str, ip: str) -> str:
    """Commands that admit only ``mac`` and ``ip`` from port ``ifname``."""
    chain = _chain(ifname)
    return (
        f"add chain bridge {TABLE} {chain}\n"
        f"flush chain bridge {TABLE} {chain}\n"
        f"add rule bridge {TABLE} {chain} ether saddr != {mac} drop\n"
        f"add rule bridge {TABLE} {chain} ether type arp arp saddr ether != {mac} drop\n"
        f"add rule bridge {TABLE} {chain} ether type arp arp saddr ip != {{ {ip}, 0.0.0.0 }} drop\n"
        f"add rule bridge {TABLE} {chain} ether type ip ip saddr != {ip} drop\n"
        f"add rule bridge {TABLE} {chain} ether type {{ arp, ip, ip6 }} accept\n"
        f"add rule bridge {TABLE} {chain} drop\n"
        f'add element bridge {TABLE} ports {{ "{ifname}" : jump {chain} }}\n'
    )


def remove_port(ifname: str) -> str:
    chain = _chain(ifname)
    return (
        f'delete element bridge {TABLE} ports {{ "{ifname}" }}\n'
        f"delete chain bridge {TABLE} {chain}\n"
    )
