"""The little of DNS's wire format a failing resolver needs (pure): a name as it travels
in a question, and the answer that fails a query with a given code.

Queries come from workspaces (root inside included), so they are read as hostile: a
question is read by its length bytes alone (no compression pointers, at most 255 bytes,
one question), and anything else is no query at all.
"""

from __future__ import annotations

import re
import struct

NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3
HEADER = struct.Struct(">HHHHHH")  # id, flags, questions, answers, authorities, additionals
MAX_NAME = 255
LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def encode_name(name: str) -> bytes:
    """``name`` as a question carries it (length-prefixed labels, a zero at the end);
    ValueError for what no question can carry."""
    labels = name.rstrip(".").split(".")
    if not name.rstrip(".") or not all(LABEL_RE.match(label) for label in labels):
        raise ValueError(f"not a DNS name: {name!r}")
    wire = b"".join(bytes([len(label)]) + label.encode("ascii") for label in labels) + b"\0"
    if len(wire) > MAX_NAME:
        raise ValueError(f"longer than {MAX_NAME} bytes as a DNS name: {name!r}")
    return wire


def question_end(query: bytes) -> int | None:
    """Where the one question of ``query`` ends (after its type and class), or None if
    ``query`` is not a plain query with one question."""
    if len(query) < HEADER.size:
        return None
    _, flags, questions, answers, authorities, _ = HEADER.unpack_from(query)
    if flags & 0x8000 or (flags >> 11) & 0xF or questions != 1 or answers or authorities:
        return None  # a response, an opcode other than QUERY, or not one question
    at = HEADER.size
    while at < len(query) and at - HEADER.size < MAX_NAME:
        length = query[at]
        if length == 0:
            end = at + 1 + 4
            return end if end <= len(query) else None
        if length > 63:
            return None  # a compression pointer or a reserved label type
        at += 1 + length
    return None


def failure(query: bytes, rcode: int) -> bytes | None:
    """The answer to ``query`` that fails it with ``rcode`` (no records at all, so nothing
    caches it), or None if ``query`` is none."""
    end = question_end(query)
    if end is None:
        return None
    ident, flags = struct.unpack_from(">HH", query)
    recursion_desired = flags & 0x0100
    answer = HEADER.pack(ident, 0x8000 | recursion_desired | 0x0080 | rcode, 1, 0, 0, 0)
    return answer + query[HEADER.size : end]
