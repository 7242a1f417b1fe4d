"""``python -m wsfixture.net.relay HOST PORT``: stdin/stdout <-> TCP, for ssh's ProxyCommand.

The generated ssh_config runs it under ``nsenter --net=<lab>``, so plain ``ssh`` reaches a
workspace inside the lab namespace without any address in the root namespace.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def relay(host: str, port: int) -> None:
    sock = socket.create_connection((host, port), timeout=30)
    sock.settimeout(None)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ)
    selector.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                data = sock.recv(65536)
                if not data:
                    return
                os.write(stdout, data)
            else:
                data = os.read(stdin, 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    selector.unregister(stdin)
                    continue
                sock.sendall(data)


if __name__ == "__main__":
    relay(sys.argv[1], int(sys.argv[2]))
