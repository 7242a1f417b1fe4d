"""The nfnetlink_queue messages a packet delayer needs (pure): bind a queue, ask for each
packet's metadata only, read the packet ids the kernel hands over, give a verdict.

Packets queued by an iptables ``NFQUEUE`` rule wait in the kernel until their verdict, so a
delay is a verdict given later; the packets themselves never come to user space (copy mode
``META``). The layout is the kernel's (``linux/netfilter/nfnetlink_queue.h``): a netlink
header, a ``nfgenmsg`` whose ``res_id`` is the queue number (big-endian), then attributes.
"""

from __future__ import annotations

import struct

NETLINK_NETFILTER = 12
SUBSYS_QUEUE = 3
MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 0, 1, 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
CFG_CMD, CFG_PARAMS, CFG_QUEUE_MAXLEN, CFG_MASK, CFG_FLAGS = 1, 2, 3, 4, 5
CMD_BIND = 1
COPY_META = 1
FLAG_FAIL_OPEN = 0x1  # a full queue lets packets through instead of dropping them
ATTR_PACKET_HDR = 1
ATTR_VERDICT_HDR = 2
NF_ACCEPT = 1
_HEADER = struct.Struct("=IHHII")  # netlink: length, type, flags, sequence, port id


def _attribute(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def message(kind: int, queue: int, attributes: list[tuple[int, bytes]], flags: int,
            sequence: int = 0) -> bytes:  # fmt: skip
    """One nfqueue message of ``kind`` (``MSG_*``) for ``queue``."""
    body = struct.pack(">BBH", 0, 0, queue)  # AF_UNSPEC, version 0, the queue (big-endian)
    body += b"".join(_attribute(k, v) for k, v in attributes)
    return _HEADER.pack(_HEADER.size + len(body), (SUBSYS_QUEUE << 8) | kind, flags,
                        sequence, 0) + body  # fmt: skip


def bind(queue: int, maxlen: int) -> list[bytes]:
    """The requests (each acknowledged) that bind ``queue`` to this socket, metadata
    only, holding up to ``maxlen`` packets and letting packets pass once it is full."""
    flags = NLM_F_REQUEST | NLM_F_ACK
    fail_open = struct.pack(">I", FLAG_FAIL_OPEN)
    return [
        message(MSG_CONFIG, queue, [(CFG_CMD, struct.pack(">BBH", CMD_BIND, 0, 0))], flags, 1),
        message(MSG_CONFIG, queue, [(CFG_PARAMS, struct.pack(">IB", 0, COPY_META)),
                                    (CFG_QUEUE_MAXLEN, struct.pack(">I", maxlen))], flags, 2),
        message(MSG_CONFIG, queue, [(CFG_FLAGS, fail_open), (CFG_MASK, fail_open)], flags, 3),
    ]  # fmt: skip


def verdict(queue: int, packet_id: int, decision: int = NF_ACCEPT) -> bytes:
    return message(MSG_VERDICT, queue, [(ATTR_VERDICT_HDR, struct.pack(">II", decision,
                                                                       packet_id))],
                   NLM_F_REQUEST)  # fmt: skip


def ack_error(data: bytes) -> int | None:
    """The error an acknowledgement carries (0: success); None if ``data`` is none."""
    if len(data) < _HEADER.size + 4:
        return None
    _, kind, _, _, _ = _HEADER.unpack_from(data)
    if kind != NLMSG_ERROR:
        return None
    error: int = struct.unpack_from("=i", data, _HEADER.size)[0]
    return -error


def packet_ids(data: bytes) -> list[int]:
    """The ids of the packets in a batch of messages from the kernel, in order."""
    ids = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            break
        if kind == (SUBSYS_QUEUE << 8) | MSG_PACKET:
            at, end = offset + _HEADER.size + 4, offset + length
            while at + 4 <= end:
                size, attr = struct.unpack_from("=HH", data, at)
                if size < 4:
                    break
                if attr & 0x7FFF == ATTR_PACKET_HDR and size >= 8:
                    ids.append(struct.unpack_from(">I", data, at + 4)[0])
                at += (size + 3) & ~3
        offset += (length + 3) & ~3
    return ids
