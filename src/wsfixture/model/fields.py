"""Declaring a config field once.

Each field of the model's dataclasses (``wsfixture.model.spec``) is declared with one of the
helpers below: its key (the attribute name; the camelCase alias follows from it), its
default, its kind with its range or choices, and a one-line description. From that one
declaration come:

- validation (``wsfixture.model.tables`` parses a table by walking its fields),
- ``to_data`` (a spec back to config keys, such that loading gives it back),
- the marker and factory keywords of the pytest plugin,
- the plan (``wsfixture plan``),
- the JSON Schema (``wsfixture schema``) and the docs' option table.

Adding a field is one line in a dataclass, plus its tests. Pure: nothing here touches the
system.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from wsfixture.errors import ConfigError, ConfigIssue
from wsfixture.model import allowlist
from wsfixture.suggest import did_you_mean

DECL = "wsfixture"  # the dataclass field metadata key of a declaration
INVALID = object()  # what a parser returns for a value it reported as wrong
NO_DEFAULT: Any = dataclasses.MISSING  # a required field's default
REQUIRED = object()  # what a required field's parser is given when the field is missing
_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_PATTERN = rf"^{_OCTET}(\.{_OCTET}){{3}}$"
# 1 to 65535, as JSON Schema can say it of a table's keys.
PORT_PATTERN = (
    "^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
)
SIZE_RE = re.compile(r"^(\d+)\s*([KMGT]i?B?|[KMGT])?$", re.IGNORECASE)


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), key)


class Collector:
    """Gathers every issue so a document's problems are reported together."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []

    def add(self, where: str, problem: str, value: object = None, allowed: str = "") -> None:
        self.issues.append(ConfigIssue(where, problem, value, allowed))

    def raise_if_any(self, source: str) -> None:
        if self.issues:
            raise ConfigError(self.issues, source)


@dataclass
class Context:
    """What a parser may consult: the issues so far, the fields of its section parsed before
    it (a gateway needs its subnet), and the lab network (a workspace's address needs it)."""

    issues: Collector
    parsed: dict[str, Any] = field(default_factory=dict)
    network: Any = None  # a NetworkSpec once the network section is parsed
    base_dir: Path | None = None  # the config file's directory, when it came from a file


RELATIVE_ALLOWED = "a path starting with / or ~, or relative to the config file's directory"


def host_path(value: str, ctx: Context) -> Path | None:
    """A host path as written: absolute or ~ as it is; relative to the config file's
    directory when the config came from a file (so a config committed to a repository works
    wherever it is checked out); None otherwise, where it would mean the working directory
    of whoever reads it."""
    if value.startswith(("/", "~")):
        return Path(value)
    if ctx.base_dir is not None:
        return Path(os.path.normpath(ctx.base_dir / value))
    return None


Parser = Callable[[object, str, Context], Any]


@dataclass(frozen=True)
class Decl:
    """One field's declaration. ``parse`` returns the model value or INVALID (after adding
    an issue); ``to_data`` turns a model value back into config data."""

    doc: str
    parse: Parser
    schema: Mapping[str, Any]
    to_data: Callable[[Any], Any] = lambda value: value
    # Only meaningful for VMs: the plan shows it for VMs only.
    vm_only: bool = False
    # A default computed from the fields parsed before this one (a gateway from a subnet).
    default_from: Callable[[Mapping[str, Any]], Any] | None = None
    # A workspace's field that the defaults' field of the same name stands behind, and how
    # the two make the value it gets (``INHERITANCE``; ``Config.resolve``).
    inherits: str | None = None


# How a workspace's own value and the defaults' make the one it gets.
INHERITANCE: dict[str, Callable[[Any, Any], Any]] = {
    "or": lambda own, default: default if own is None else own,  # its own, else theirs
    "after": lambda own, default: (*default, *own),  # theirs, then its own
    "union": lambda own, default: tuple(sorted({*default, *own})),  # both, sorted, once
    "over": lambda own, default: {**dict(default), **dict(own)},  # both; its own win
}


def declared(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    parse: Parser,
    schema: Mapping[str, Any],
    to_data: Callable[[Any], Any] | None = None,
    vm_only: bool = False,
    default_from: Callable[[Mapping[str, Any]], Any] | None = None,
    factory: Callable[[], Any] | None = None,
    allowed: str | None = None,
    inherits: str | None = None,
) -> Any:
    """A dataclass field carrying its declaration. A required field's missing value is
    reported with ``allowed``; without it, the parser is handed REQUIRED to say so itself."""
    if allowed is not None:
        given = parse

        def parse(value: object, where: str, ctx: Context) -> Any:
            if value is REQUIRED:
                ctx.issues.add(where, "is required", allowed=allowed)
                return INVALID
            return given(value, where, ctx)

    assert inherits is None or inherits in INHERITANCE, inherits
    decl = Decl(
        doc, parse, schema, to_data or (lambda value: value), vm_only, default_from, inherits
    )
    if factory is not None:
        return field(default_factory=factory, metadata={DECL: decl})
    return field(default=default, metadata={DECL: decl})


def declarations(cls: type) -> list[tuple[dataclasses.Field[Any], Decl]]:
    """The declared fields of a model class, in declaration order."""
    return [(f, f.metadata[DECL]) for f in dataclasses.fields(cls) if DECL in f.metadata]


def keys(cls: type) -> tuple[str, ...]:
    """Every declared key of ``cls``, snake_case."""
    return tuple(f.name for f, _ in declarations(cls))


def is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def to_data(obj: Any) -> dict[str, Any]:
    """A model object as config data (camelCase keys); None values are left out."""
    out = {}
    for f, decl in declarations(type(obj)):
        value = getattr(obj, f.name)
        if value is not None:
            out[camel(f.name)] = decl.to_data(value)
    return out


# -- the kinds of field --------------------------------------------------------------------


def _wrong_type(value: object, kind: type) -> bool:
    # bool is an int in Python; a `true` where a number belongs is a mistake.
    return (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind)


def boolean(default: bool | None, doc: str, **extra: Any) -> Any:
    def parse(value: object, where: str, ctx: Context) -> Any:
        if _wrong_type(value, bool):
            ctx.issues.add(where, "has the wrong type", value, "true or false")
            return INVALID
        return value

    return declared(default, doc=doc, parse=parse, schema={"type": "boolean"}, **extra)


def egress(doc: str) -> Any:
    """``true``, ``false``, or an allowlist of destinations (``model.allowlist``)."""

    def parse(value: object, where: str, ctx: Context) -> Any:
        if isinstance(value, bool):
            return value
        if not isinstance(value, list | tuple):
            wanted = f"true, false, or a list of destinations: each {allowlist.ALLOWED}"
            ctx.issues.add(where, "has the wrong type", value, wanted)
            return INVALID
        good = []
        for index, item in enumerate(value):
            found = allowlist.parse(item) if isinstance(item, str) else "is not a string"
            if isinstance(found, str):
                ctx.issues.add(f"{where}[{index}]", found, item, allowlist.ALLOWED)
            else:
                good.append(str(found))
        return tuple(good)

    schema = {"oneOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "string"}}]}
    return declared(None, doc=doc, parse=parse, schema=schema,
                    to_data=lambda v: list(v) if isinstance(v, tuple) else v)  # fmt: skip


def integer(
    default: int | None, doc: str, low: int, high: int, unit: str = "", **extra: Any
) -> Any:
    allowed = f"an integer from {low} to {high}{unit}"

    def parse(value: object, where: str, ctx: Context) -> Any:
        if _wrong_type(value, int):
            ctx.issues.add(where, "has the wrong type", value, allowed)
            return INVALID
        assert isinstance(value, int)
        if not low <= value <= high:
            ctx.issues.add(where, "is out of range", value, allowed)
            return INVALID
        return value

    schema = {"type": "integer", "minimum": low, "maximum": high}
    return declared(default, doc=doc, parse=parse, schema=schema, **extra)


def size_mib(default: int | None, doc: str, low: int, high: int, **extra: Any) -> Any:
    """MiB as an integer, or a string like "8G" or "512MiB"."""
    top = f"{high >> 20} TiB" if high >= 1 << 20 else f"{high} MiB"
    allowed = f'MiB as an integer, or a string like "8G" or "512M", from {low} MiB to {top}'
    factors = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}

    def parse(value: object, where: str, ctx: Context) -> Any:
        shown = value
        if isinstance(value, str):
            match = SIZE_RE.match(value.strip())
            if not match:
                ctx.issues.add(where, "is not a size", value, allowed)
                return INVALID
            shown = match.group(0)
            value = int(int(match.group(1)) * factors[(match.group(2) or "M")[0].upper()])
        elif _wrong_type(value, int):
            ctx.issues.add(where, "has the wrong type", value, allowed)
            return INVALID
        assert isinstance(value, int)
        if not low <= value <= high:
            ctx.issues.add(where, "is out of range", shown, allowed)
            return INVALID
        return value

    schema = _integer_or_text(low, high, r"^\s*\d+\s*([KMGTkmgt][iI]?[bB]?)?\s*$")
    return declared(default, doc=doc, parse=parse, schema=schema, **extra)


def _integer_or_text(low: int, high: int, pattern: str) -> dict[str, Any]:
    """The JSON Schema of a number given as an integer in range, or as text with a unit."""
    return {
        "oneOf": [
            {"type": "integer", "minimum": low, "maximum": high},
            {"type": "string", "pattern": pattern},
        ]
    }


DURATION_RE = re.compile(r"^(\d+)\s*([smhd]?)$")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int | None:
    """Seconds of "90", "90s", "30m", "2h" or "1d"; None for anything else."""
    match = DURATION_RE.match(text.strip())
    return int(match.group(1)) * DURATION_UNITS[match.group(2)] if match else None


def duration(doc: str, low: int = 1, high: int = 366 * 86400, **extra: Any) -> Any:
    """An optional duration: seconds as an integer, or a string like "30m" (s, m, h, d)."""
    allowed = 'seconds as an integer, or a string like "90s", "30m", "2h" or "1d"'

    def parse(value: object, where: str, ctx: Context) -> Any:
        seconds = parse_duration(value) if isinstance(value, str) else value
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            ctx.issues.add(where, "is not a duration", value, allowed)
            return INVALID
        if not low <= seconds <= high:
            ctx.issues.add(where, "is out of range", value, f"{allowed}, from {low} s to 366 days")
            return INVALID
        return seconds

    schema = _integer_or_text(low, high, r"^\s*\d+\s*[smhd]?\s*$")
    return declared(None, doc=doc, parse=parse, schema=schema, **extra)


def choice(default: Any, doc: str, choices: tuple[str, ...], **extra: Any) -> Any:
    allowed = " or ".join(repr(c) for c in choices)

    def parse(value: object, where: str, ctx: Context) -> Any:
        if value not in choices:
            hint = did_you_mean(value, choices)
            ctx.issues.add(where, "is not one of the choices", value, allowed + hint)
            return INVALID
        return value

    required = " or ".join(f'"{c}"' for c in choices)
    schema = {"enum": list(choices)}
    return declared(default, doc=doc, parse=parse, schema=schema, allowed=required, **extra)


def text(
    default: Any, doc: str, pattern: re.Pattern[str], what: str, allowed: str, **extra: Any
) -> Any:
    """A string matching ``pattern`` (``what`` names it in the problem)."""

    def parse(value: object, where: str, ctx: Context) -> Any:
        if isinstance(value, str) and pattern.match(value):
            return value
        ctx.issues.add(where, f"is not a valid {what}", value, allowed)
        return INVALID

    schema = {"type": "string", "pattern": pattern.pattern}
    return declared(default, doc=doc, parse=parse, schema=schema, **extra)


def string_list(
    doc: str,
    pattern: re.Pattern[str],
    what: str,
    reject: Callable[[str], bool] = lambda item: False,
    problem: str = "is not valid",
    **extra: Any,
) -> Any:
    """A list of strings matching ``pattern`` (default: empty). The good items are kept, so
    one bad item does not hide the others' problems."""

    def parse(value: object, where: str, ctx: Context) -> Any:
        if not isinstance(value, list | tuple):
            ctx.issues.add(where, "must be a list", value, f"a list of {what}")
            return INVALID
        good = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not pattern.match(item) or reject(item):
                ctx.issues.add(f"{where}[{index}]", problem, item, what)
            else:
                good.append(item)
        return tuple(good)

    schema = {"type": "array", "items": {"type": "string", "pattern": pattern.pattern}}
    return declared((), doc=doc, parse=parse, schema=schema, to_data=list, **extra)


# The host's own directories: a state root there would make "<root>/<workspace name>" one
# of them (stateRoot = "/etc" and a workspace "ssh" is /etc/ssh, written as root).
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
               "/run", "/sbin", "/sys", "/usr", "/var/lib/dpkg", "/var/lib/apt")  # fmt: skip


def path(
    default: Path, doc: str, prefixes: tuple[str, ...] = (), not_system: bool = False,
    **extra: Any,
) -> Any:  # fmt: skip
    """A host path (``host_path``); ``prefixes``: it must not be relative to the reader's
    working directory (an absolute, ~ or config-relative path); ``not_system``: neither
    ``/`` nor in one of the host's ``SYSTEM_DIRS``."""
    allowed = RELATIVE_ALLOWED if prefixes else "a directory path"
    if not_system:
        allowed += f", not / nor under {', '.join(SYSTEM_DIRS)}"

    def parse(value: object, where: str, ctx: Context) -> Any:
        if not isinstance(value, str) or not value.strip():
            ctx.issues.add(where, "is not a path", value, allowed)
            return INVALID
        resolved = host_path(value, ctx)
        if resolved is None and prefixes:
            ctx.issues.add(where, "is not an absolute host path", value, allowed)
            return INVALID
        if not_system and is_system_dir(resolved or Path(value)):
            ctx.issues.add(where, "is a system directory of the host", value, allowed)
            return INVALID
        return resolved or Path(value)

    schema: dict[str, Any] = {"type": "string", "pattern": r"\S"}
    return declared(
        default, doc=doc, parse=parse, schema=schema, to_data=str, allowed=allowed, **extra
    )


def is_system_dir(path: Path) -> bool:
    """``/``, or a path in one of the host's ``SYSTEM_DIRS`` (as written: the config is
    the user's, and this guards against a slip, not a link)."""
    seen = Path(os.path.normpath(path.expanduser()))
    return seen == Path("/") or any(seen == Path(d) or Path(d) in seen.parents for d in SYSTEM_DIRS)


def file_map(doc: str, **extra: Any) -> Any:
    """Files to put into an image: absolute guest path -> a regular file on the host (an
    absolute or ~ path), checked to exist when the config is read."""
    allowed = (
        'a table of absolute guest paths to host files, like { "/etc/app.conf" = "~/app.conf" }'
    )

    def parse(value: object, where: str, ctx: Context) -> Any:
        if not isinstance(value, Mapping):
            ctx.issues.add(where, "must be a table", value, allowed)
            return INVALID
        good = []
        for target, source in value.items():
            here = f"{where}.{target}"
            if not isinstance(target, str) or not target.startswith("/") or target == "/":
                ctx.issues.add(
                    here, "is not an absolute guest path", target, "a path like /etc/app.conf"
                )
            elif ".." in PurePosixPath(target).parts:
                ctx.issues.add(
                    here,
                    "has a '..' component",
                    target,
                    "a path like /etc/app.conf",
                )
            elif not isinstance(source, str) or (found := host_path(source, ctx)) is None:
                ctx.issues.add(here, "is not an absolute host path", source, RELATIVE_ALLOWED)
            elif not found.expanduser().is_file():
                problem = (
                    "does not exist" if not found.expanduser().exists() else "is not a regular file"
                )
                ctx.issues.add(here, problem, source, "a regular file on the host")
            else:
                good.append((target, found.expanduser()))
        return tuple(good)

    schema = {
        "type": "object",
        "propertyNames": {"pattern": "^/(?!(.*/)?\\.\\.(/|$))."},
        "additionalProperties": {"type": "string", "pattern": r"\S"},
    }
    return declared(
        (), doc=doc, parse=parse, schema=schema, to_data=lambda v: {t: str(s) for t, s in v},
        **extra,
    )  # fmt: skip


def ipv4_network(default: ipaddress.IPv4Network, doc: str, prefixes: tuple[int, int]) -> Any:
    low, high = prefixes

    def parse(value: object, where: str, ctx: Context) -> Any:
        try:
            subnet = ipaddress.IPv4Network(value, strict=True)  # type: ignore[arg-type,unused-ignore]
        except (ValueError, TypeError) as exc:
            ctx.issues.add(
                where, f"is not an IPv4 network ({exc})", value, 'a network like "192.168.83.0/24"'
            )
            return INVALID
        if not low <= subnet.prefixlen <= high:
            ctx.issues.add(
                where,
                "has an unusable prefix length",
                str(subnet),
                f"a prefix from /{low} to /{high}",
            )
            return INVALID
        return subnet

    prefix = "|".join(str(n) for n in range(high, low - 1, -1))
    schema = {"type": "string", "pattern": IPV4_PATTERN[:-1] + f"/({prefix})$"}
    return declared(default, doc=doc, parse=parse, schema=schema, to_data=str)


def hosts_of(subnet: ipaddress.IPv4Network) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The first and last host address of ``subnet``."""
    return subnet.network_address + 1, subnet.broadcast_address - 1


def address_in_subnet(
    default: ipaddress.IPv4Address,
    doc: str,
    default_from: Callable[[Mapping[str, Any]], Any],
) -> Any:
    """An address inside the section's ``subnet`` (parsed before it)."""

    def parse(value: object, where: str, ctx: Context) -> Any:
        subnet = ctx.parsed.get("subnet")
        try:
            parsed = ipaddress.IPv4Address(value)  # type: ignore[arg-type,unused-ignore]
        except (ValueError, TypeError):
            ctx.issues.add(where, "is not an IPv4 address", value, f"an address in {subnet}")
            return INVALID
        if subnet is not None:
            first, last = hosts_of(subnet)
            if not first <= parsed <= last:
                ctx.issues.add(
                    where, f"is outside the subnet {subnet}", value, f"{first} to {last}"
                )
                return INVALID
        return parsed

    schema = {"type": "string", "pattern": IPV4_PATTERN}
    return declared(
        default, doc=doc, parse=parse, schema=schema, to_data=str, default_from=default_from
    )


def workspace_address(doc: str) -> Any:
    """A workspace's address: in the lab's usable range, not the gateway's. Required."""

    def parse(value: object, where: str, ctx: Context) -> Any:
        network = ctx.network
        allowed = (
            f"an address from {network.range_start} to {network.range_end}, "
            f"not the gateway {network.gateway}"
        )
        if value is REQUIRED:
            ctx.issues.add(where, "is required", allowed=allowed)
            return INVALID
        try:
            ip = ipaddress.IPv4Address(value if isinstance(value, str) else "")
        except ValueError:
            ctx.issues.add(where, "is not an IPv4 address", value, allowed)
            return INVALID
        if ip not in network.subnet:
            ctx.issues.add(where, f"is outside the subnet {network.subnet}", value, allowed)
        elif ip == network.gateway:
            ctx.issues.add(where, "is the gateway's address", value, allowed)
        elif not network.range_start <= ip <= network.range_end:
            ctx.issues.add(where, "is outside the usable range", value, allowed)
        else:
            return ip
        return INVALID

    schema = {"type": "string", "pattern": IPV4_PATTERN}
    return declared(doc=doc, parse=parse, schema=schema, to_data=str)


def port_map(doc: str) -> Any:
    """A table of host port -> workspace port (TOML keys are strings): ((host, ws), ...)."""
    allowed = "a table like { 8080 = 80 }: host port = workspace port, each 1 to 65535"

    def port(value: object) -> int | None:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
            return value
        return None

    def parse(value: object, where: str, ctx: Context) -> Any:
        if not isinstance(value, Mapping):
            ctx.issues.add(where, "must be a table", value, allowed)
            return INVALID
        pairs = []
        for key, target in value.items():
            local, remote = port(key), port(target)
            if local is None or remote is None:
                ctx.issues.add(f"{where}.{key}", "is not a port forward", target, allowed)
                return INVALID
            pairs.append((local, remote))
        return tuple(sorted(pairs))

    schema = {
        "type": "object",
        "propertyNames": {"pattern": PORT_PATTERN},
        "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 65535},
    }
    return declared(
        (), doc=doc, parse=parse, schema=schema,
        to_data=lambda pairs: {str(local): remote for local, remote in pairs},
    )  # fmt: skip


def opaque_string(doc: str, allowed: str) -> Any:
    """A string wsfixture keeps as it is (meaningful to another tool); default: absent."""

    def parse(value: object, where: str, ctx: Context) -> Any:
        if not isinstance(value, str):
            ctx.issues.add(where, "must be a path string", value, allowed)
            return INVALID
        return value

    return declared(None, doc=doc, parse=parse, schema={"type": "string"})
