"""The way out: a lab's internet through a userspace network stack, slirp4netns.

slirp4netns (1.2.0 in Debian 12; what podman uses) gives the lab namespace a TAP device
whose far end is a process: what leaves the lab leaves as that process's own sockets, in
the namespace the process runs in. So there is no change to the root namespace at all: no
ip_forward, no firewall rule, no route there. Inside the lab, the workspace subnet is
masqueraded to the TAP and forwarded; workspaces that must stay off are in an nftables set
that is dropped. `--disable-host-loopback` keeps the host's 127.0.0.0/8 out of reach; the
rest of the host is the ``host`` set, refused to every workspace: the addresses of the
namespace slirp4netns runs in (read as it starts: a connection from slirp4netns to one of
them is the host talking to itself, to any service bound to 0.0.0.0) and 169.254.0.0/16
(a cloud's instance metadata and its credentials).
Chosen over pasta (passt) because it is the packaged, settled one here and has that switch
and a ready signal; pasta's Debian 12 build is a 2023 snapshot.

In production the process runs in the root namespace (the host's network and resolv.conf);
a test runs it in a "world" namespace of its own (`ip netns exec`, which also puts that
namespace's resolv.conf in place), so no test packet leaves the machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import subprocess
from dataclasses import dataclass
from pathlib import Path

from wsfixture.errors import LabError
from wsfixture.host import system
from wsfixture.net import egress

INTERFACE = "wsup0"
# slirp4netns's own network inside the lab: the first that does not overlap the lab's.
CANDIDATE_CIDRS = ("10.0.2.0/24", "10.0.3.0/24", "100.64.2.0/24")
READY_TIMEOUT = 10.0


@dataclass(frozen=True)
class Uplink:
    """Where the uplink sits inside the lab: its subnet, its gateway and its DNS."""

    cidr: ipaddress.IPv4Network

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.cidr[2]

    @property
    def dns(self) -> ipaddress.IPv4Address:
        return self.cidr[3]  # slirp4netns forwards it to the resolvers its process sees


def plan(subnet: ipaddress.IPv4Network) -> Uplink:
    for candidate in CANDIDATE_CIDRS:
        cidr = ipaddress.IPv4Network(candidate)
        if not cidr.overlaps(subnet):
            return Uplink(cidr)
    raise LabError(str(subnet), "no uplink subnet left that does not overlap the lab's")


LINK_LOCAL = "169.254.0.0/16"


def nat_rules(subnet: ipaddress.IPv4Network, bridge: str, gateway: str, host: list[str]) -> str:
    """The lab's nftables ruleset: masquerade the workspaces to the uplink, forward what
    they start (and its replies), drop the workspaces in the ``offline`` set, refuse the
    ``host`` (its own addresses, and link-local) to all, hold those with an allowlist to
    it (``net.egress``). Traffic between workspaces is bridged, but where br_netfilter is
    loaded it passes this hook as well: it is accepted first."""
    refused = ", ".join([LINK_LOCAL, *host])
    return f"""\
table ip wsfixture {{
  set offline {{ type ipv4_addr; }}
  set host {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {refused} }} }}
{egress.scaffold(bridge, gateway)}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    iifname "{bridge}" oifname "{bridge}" accept
    iifname "{bridge}" oifname "{INTERFACE}" ip saddr @offline drop
    iifname "{bridge}" oifname "{INTERFACE}" ip daddr @host goto deny
    {egress.forward_rule(bridge, INTERFACE)}
    iifname "{bridge}" oifname "{INTERFACE}" ip saddr {subnet} accept
    iifname "{INTERFACE}" oifname "{bridge}" ct state established,related accept
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{INTERFACE}" ip saddr {subnet} masquerade
  }}
}}
"""


def offline_change(ip: str, gateway: str, offline: bool) -> str:
    """The nft batch that puts a workspace's address into the offline set, its DNS to the
    lab's resolver without upstream (lab names only: no channel out in DNS labels), or
    both back."""
    verb = "add" if offline else "delete"
    port = egress.OFFLINE_RESOLVER_PORT
    lines = [f"{verb} element ip wsfixture offline {{ {ip} }}",
             *egress.resolver_elements(verb, ip, gateway, port)]  # fmt: skip
    return "\n".join(lines) + "\n"


def own_addresses(via: str | None) -> list[str]:
    """The IPv4 addresses of the namespace the uplink runs in (``via``, or the root one):
    what a workspace must not reach through it. Read, never changed."""
    argv = ["ip", *(["-netns", via] if via else []), "-json", "-4", "addr", "show"]
    try:
        links = json.loads(system.run(argv) or "[]")
    except (system.HostCommandError, ValueError) as exc:
        raise LabError(via or "root namespace", f"cannot read its addresses: {exc}") from None
    return sorted({a["local"] for link in links for a in link.get("addr_info", [])
                   if a.get("family") == "inet" and "local" in a})  # fmt: skip


def argv(netns_path: Path, uplink: Uplink, ready_fd: int, via: str | None) -> list[str]:
    """slirp4netns for the lab at ``netns_path``; ``via``: the namespace it runs in."""
    command = [
        system.require_tool("slirp4netns"),
        "--configure", "--mtu=65520", "--disable-host-loopback",
        "--enable-sandbox", "--enable-seccomp",
        f"--cidr={uplink.cidr}", f"--ready-fd={ready_fd}",
        "--netns-type=path", str(netns_path), INTERFACE,
    ]  # fmt: skip
    if via is not None:  # ip netns exec gives it a mount namespace of its own as well
        return ["ip", "netns", "exec", via, *command]
    # Its sandbox pivots root and detaches the old one; in the host's mount namespace, the
    # detach propagated through the shared /run/netns and unmounted every namespace there
    # (measured with slirp4netns 1.2.0). A private mount namespace of its own keeps it in.
    return ["unshare", "--mount", "--propagation", "private", *command]


def launch(
    netns_path: Path, uplink: Uplink, log: Path, via: str | None, die_with_owner: bool
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the uplink; return it and the fd its ready signal comes on (``wait_ready``).
    Whatever the caller does meanwhile overlaps slirp4netns's start."""
    read_end, write_end = os.pipe()
    try:
        with open(log, "ab") as output:
            process = system.popen_lasting(
                argv(netns_path, uplink, write_end, via),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=(write_end,),
                preexec_fn=system.set_parent_death_signal if die_with_owner else None,
                start_new_session=True,
            )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return process, read_end


def wait_ready(process: subprocess.Popen[bytes], ready_fd: int, log: Path) -> None:
    """Wait until the uplink has configured the lab's end; LabError if it never does."""
    try:
        ready, _, _ = select.select([ready_fd], [], [], READY_TIMEOUT)
        said = os.read(ready_fd, 1) if ready else b""
    finally:
        os.close(ready_fd)
    if said != b"1":
        system.end_process(process, 0.0)
        raise LabError(str(log.parent.name), "the uplink (slirp4netns) did not start",
                       system.tail(log))  # fmt: skip
