"""A network namespace we made, by name: run programs in it, configure it, open sockets in it.

Everything a lab does to its own network goes through here, so nothing reaches the root
namespace by accident.
"""

from __future__ import annotations

import socket
import threading

from wsfixture.host import settings, system


class Netns:
    """The network namespace ``/run/netns/<name>`` (made and removed by its owner)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.netns_path = settings.NETNS_RUN / name

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run in the namespace (keeps /sys and cgroups visible)."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def run(self, argv: list[str], check: bool = True, input: str | None = None) -> str:
        return system.run(self.exec_argv(argv), check=check, input=input)

    def resolve(self, name: str) -> str:
        """The address ``name`` has on the namespace's side: ``ip netns exec`` puts
        ``/etc/netns/<name>/hosts`` in place of /etc/hosts, as it does for any program run
        that way."""
        out = system.run(["ip", "netns", "exec", self.name, "getent", "hosts", name], check=False)
        return out.split()[0] if out.strip() else ""

    def ip_batch(self, commands: str) -> None:
        system.run(["ip", "-netns", self.name, "-batch", "-"], input=commands + "\n")

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def connect(self, ip: str, port: int, timeout: float) -> socket.socket:
        """A TCP socket to ``ip:port`` inside the namespace, connected, with TCP_NODELAY."""
        holder: list[socket.socket | BaseException] = []

        def make() -> None:
            # setns applies to this thread only; the socket keeps the namespace it was
            # born in, so it works from any thread afterwards.
            try:
                system.enter_netns(self.netns_path)
                holder.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            except BaseException as exc:
                holder.append(exc)

        thread = threading.Thread(target=make, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        result = holder[0]
        if isinstance(result, BaseException):
            raise result
        sock = result
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return sock

    def port_open(self, ip: str, port: int, timeout: float = 0.2) -> bool:
        try:
            self.connect(ip, port, timeout).close()
        except OSError:
            return False
        return True

    def forget_neighbour(self, ip: str) -> None:
        """Drop a stale neighbour entry so a reused address resolves afresh."""
        self.run(["ip", "neigh", "flush", "to", ip], check=False)
