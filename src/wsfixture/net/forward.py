"""A workspace's port on the host's loopback: what testcontainers users know as an exposed
port, so a test's own tools (requests, httpx, a browser) reach a service inside the lab.

A ``PortForward`` listens on 127.0.0.1 in the root namespace (loopback only: nothing else on
the host or the network sees it) and relays each connection to the workspace's port through
a socket opened inside the lab (``Lab.connect``). Threads, one pair per connection; closing
the forward closes the listener and every connection it relayed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING

from wsfixture.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from wsfixture.net.lab import Lab

LOOPBACK = "127.0.0.1"
CHUNK = 256 * 1024


class PortForward:
    """127.0.0.1:<local> -> <ip>:<port> inside ``lab``; ``local = 0`` picks a free port."""

    def __init__(self, lab: Lab, ip: str, port: int, local: int = 0) -> None:
        for where, number in (("port", port), ("local", local)):
            if not (0 if where == "local" else 1) <= number <= 65535:
                raise ConfigError(
                    [ConfigIssue(f"forward.{where}", "is not a port", number, "1 to 65535")]
                )
        self.lab = lab
        self.ip = ip
        self.port = port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((LOOPBACK, local))
        except OSError as exc:
            self._listener.close()
            raise ConfigError(
                [ConfigIssue("forward.local", f"cannot be bound: {exc.strerror}", local,
                             "a free port on 127.0.0.1, or 0 for any")]
            ) from exc  # fmt: skip
        self._listener.listen(64)
        self.local = self._listener.getsockname()[1]
        self._open: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._accept, name=f"wsfixture-forward-{self.local}", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.local

    def __repr__(self) -> str:
        return f"<PortForward {LOOPBACK}:{self.local} -> {self.ip}:{self.port}>"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = self.lab.connect(self.ip, self.port, timeout=5.0)
            except OSError:
                client.close()  # nothing listens there (yet): the client sees a reset
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, upstream)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._open.add(pair)
            remaining = [2]  # the pumps still running for this pair; the last one closes it
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink, pair, remaining),
                    name="wsfixture-pump", daemon=True,
                ).start()  # fmt: skip

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        pair: tuple[socket.socket, socket.socket],
        remaining: list[int],
    ) -> None:
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)  # pass the half-close on
        except OSError:
            pass
        with self._lock:
            remaining[0] -= 1
            last = remaining[0] == 0
            if last:
                self._open.discard(pair)
        if last:
            for sock in pair:
                sock.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = [sock for pair in self._open for sock in pair]
            self._open.clear()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(5)
