"""The helper processes behind the faults no rule can make alone, run in a lab's namespace
(``workspace.faults`` starts them, ends them when a fault heals, and ``gc`` ends what a
killed session left):

    python -m wsfixture.net.fault_agent delay DELAY_MS JITTER_MS
        holds each packet of an NFQUEUE queue DELAY_MS (+- JITTER_MS, uniform) before
        letting it go on: delay and jitter where the kernel has no ``sch_netem``;
    python -m wsfixture.net.fault_agent dns RCODE ADDRESS
        answers every query that reaches it on ADDRESS with RCODE (SERVFAIL, NXDOMAIN),
        as an unprivileged user: the lab redirects a failed name's queries to it.

Each prints ``ready N`` (the queue or port it took: the first free one of its range) and
then serves until SIGTERM, when a delayer lets go of every packet it holds at once.
"""

from __future__ import annotations

import errno
import grp
import heapq
import os
import pwd
import random
import select
import signal
import socket
import sys
import time

from wsfixture.net import dnswire, nfqueue

QUEUES = range(4096, 8192)  # NFQUEUE numbers (a lab namespace has its own)
DNS_PORTS = range(19900, 20000)  # below the resolvers' (egress.RESOLVER_PORT_BASE)
QUEUE_LENGTH = 8192  # packets held at once; past that they pass undelayed (fail open)
RECEIVE_BUFFER = 8 << 20


class Stop(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise Stop


def _ready(number: int) -> None:
    os.write(1, f"ready {number}\n".encode())
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)


def bind_queue(sock: socket.socket) -> int:
    """The first free queue of ``QUEUES``, bound to ``sock``."""
    for queue in QUEUES:
        errors = []
        for request in nfqueue.bind(queue, QUEUE_LENGTH):
            sock.send(request)
            errors.append(nfqueue.ack_error(sock.recv(4096)))
        if errors[0] == 0:
            if any(errors):
                raise OSError(max(e or 0 for e in errors), f"configuring queue {queue}")
            return queue
        if errors[0] != errno.EBUSY:
            raise OSError(errors[0] or 0, f"binding queue {queue}")
    raise OSError(errno.EBUSY, f"no free queue in {QUEUES.start}-{QUEUES.stop - 1}")


def delay(delay_ms: float, jitter_ms: float) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nfqueue.NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER)  # SO_RCVBUFFORCE: we are root
    sock.bind((0, 0))
    queue = bind_queue(sock)
    _ready(queue)
    held: list[tuple[float, int]] = []  # (when it goes on, packet id)
    expected: int | None = None  # ids are given in sequence: a gap is a message we lost

    def due() -> float:
        return time.monotonic() + max(0.0, delay_ms + random.uniform(-jitter_ms, jitter_ms)) / 1e3

    try:
        while True:
            wait = max(0.0, held[0][0] - time.monotonic()) if held else None
            if select.select([sock], [], [], wait)[0]:
                try:
                    data = sock.recv(1 << 20)
                except OSError as error:  # ENOBUFS: the next id shows what was lost
                    if error.errno != errno.ENOBUFS:
                        raise
                    data = b""
                for packet in nfqueue.packet_ids(data):
                    when = due()
                    lost = range(expected, packet) if expected is not None else range(0)
                    for missed in lost[-QUEUE_LENGTH:]:
                        heapq.heappush(held, (when, missed))
                    heapq.heappush(held, (when, packet))
                    expected = packet + 1
            now = time.monotonic()
            while held and held[0][0] <= now:
                sock.send(nfqueue.verdict(queue, heapq.heappop(held)[1]))
    except Stop:
        for _, packet in held:  # healed: nothing held stays behind, nothing is dropped
            sock.send(nfqueue.verdict(queue, packet))


def drop_privileges() -> None:
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(grp.getgrnam("nogroup").gr_gid)
    os.setuid(nobody.pw_uid)


def dns(rcode: int, address: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for port in DNS_PORTS:
        try:
            sock.bind((address, port))
            break
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
    else:
        raise OSError(errno.EADDRINUSE, f"no free port in {DNS_PORTS.start}-{DNS_PORTS.stop - 1}")
    drop_privileges()
    _ready(port)
    try:
        while True:
            query, sender = sock.recvfrom(4096)
            answer = dnswire.failure(query, rcode)
            if answer is not None:
                sock.sendto(answer, sender)
    except Stop:
        pass


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if len(argv) == 3 and argv[0] == "delay":
        delay(float(argv[1]), float(argv[2]))
    elif len(argv) == 3 and argv[0] == "dns":
        dns(int(argv[1]), argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
