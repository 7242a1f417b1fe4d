"""Deterministic identity of a workspace, derived from its name alone.

Every value here is a pure function of the workspace name, so the same name gives the same
MAC, vsock CID and interface names on every run and every machine. A reused IP with a new
MAC stalls on stale neighbour entries; a stable MAC avoids that.

The algorithm is mirrored in ``nix/derive.nix`` with Nix builtins only; the two are held
together by shared test vectors. Change one, change both.

All values come from one digest: sha256 of ``"wsfixture/" + name``, as lowercase hex.
- MAC: ``02`` (locally administered, unicast) followed by digest hex 0..10.
- vsock CID: ``3 + int(hex 10..18) mod (2**32 - 4)``, so 3 <= cid <= 2**32 - 2
  (0-2 are reserved, 2**32 - 1 is VMADDR_CID_ANY).
- Interface names: a 4-character prefix and digest hex 0..8, 12 bytes (Linux allows 15).
"""

from __future__ import annotations

import hashlib

DIGEST_PREFIX = "wsfixture/"
CID_MIN = 3
CID_SPAN = 2**32 - 4
IFNAME_MAX = 15

TAP_PREFIX = "wst-"
VETH_HOST_PREFIX = "wsc-"

ALIAS_SUFFIXES = ("", "_start", "_stop", "_restart", "_status")


def digest(name: str) -> str:
    """The hex digest every identity is cut from."""
    return hashlib.sha256((DIGEST_PREFIX + name).encode()).hexdigest()


def machine_id(name: str) -> str:
    """``/etc/machine-id``'s 32 hex digits."""
    return digest(name)[:32]


def mac(name: str) -> str:
    """Locally administered unicast MAC, stable for the name."""
    hexes = digest(name)[:10]
    return "02:" + ":".join(hexes[i : i + 2] for i in range(0, 10, 2))


def bridge_mac(lab: str) -> str:
    """A lab bridge's own MAC (the gateway's), stable for the lab. Locally administered like
    the workspaces' but apart from them (06: where theirs are 02:). Set, it never changes;
    left to the kernel, a bridge takes the lowest MAC of its ports, and changes it as ports
    come and go: every workspace's cached gateway MAC then points nowhere until its ARP
    entry ages out, and replies to the lab stall (TCP backoff: ~54 s, #30)."""
    hexes = digest(f"bridge:{lab}")[:10]
    return "06:" + ":".join(hexes[i : i + 2] for i in range(0, 10, 2))


def vsock_cid(name: str) -> int:
    """vsock context id in [3, 2**32 - 2], stable for the name."""
    return CID_MIN + int(digest(name)[10:18], 16) % CID_SPAN


def tap_name(name: str) -> str:
    """Host-side TAP device of a VM."""
    return TAP_PREFIX + digest(name)[:8]


def veth_host_name(name: str) -> str:
    """Host (bridge) side of a container's veth pair; inside, the container sees ``eth0``."""
    return VETH_HOST_PREFIX + digest(name)[:8]


FAULTS_TABLE_PREFIX = "wsfixture_faults"


def fault_queue_chain(table: str) -> str:
    """The iptables chain of a fault table's delays (iptables allows 28 characters)."""
    return "wsff" + table.removeprefix(FAULTS_TABLE_PREFIX)


def ifb_name(port: str) -> str:
    """The IFB device a bridge port's ingress is shaped on (15 characters at most)."""
    return "wsfi" + port[-11:]


def interface_names(name: str) -> dict[str, str]:
    """Every interface name a workspace may own, by role."""
    return {"tap": tap_name(name), "veth": veth_host_name(name)}


def hostnames(name: str) -> list[str]:
    """Names a workspace answers to: its own, and ``workspace-<name>`` as the seed uses."""
    return [name, f"workspace-{name}"]


def hosts_line(name: str, ip: str) -> str:
    """One hosts-file line for the workspace."""
    return " ".join([ip, *hostnames(name)])


def alias_names(name: str) -> list[str]:
    """Shell alias names: ``workspace_<name>`` (ssh) and its _start/_stop/_restart/_status."""
    return [f"workspace_{name}{suffix}" for suffix in ALIAS_SUFFIXES]


def identity(name: str, ip: str) -> dict[str, object]:
    """Everything derived for one workspace, as plain data (also the shared test vectors)."""
    return {
        "name": name,
        "mac": mac(name),
        "cid": vsock_cid(name),
        "interfaces": interface_names(name),
        "hostnames": hostnames(name),
        "hostsLine": hosts_line(name, ip),
        "aliases": alias_names(name),
    }
