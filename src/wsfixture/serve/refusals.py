"""What the server answers a request with when it cannot do it: E2B's status codes. They
never reach a user of wsfixture's Python API, so they stand outside its error tree."""

from __future__ import annotations


class Refusal(Exception):
    """A request the server cannot carry out (500 unless a subclass says)."""

    status = 500


class NotFound(Refusal):
    """No such sandbox, process or file: E2B's 404."""

    status = 404


class BadRequest(Refusal):
    """A field the server cannot take, named with its value: E2B's 400."""

    status = 400


class Paused(Refusal):
    """A paused sandbox's envd is not there until it is resumed: E2B's edge says 502."""

    status = 502


class Conflict(Refusal):
    """The sandbox is not in the state the call needs (paused already, not paused)."""

    status = 409


class TooMany(Refusal):
    """Past the server's bound on sandboxes, or a sandbox's on running commands: E2B's 429."""

    status = 429
