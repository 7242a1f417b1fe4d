"""Tables of declared fields: parsing a config table by walking the fields its dataclass
declares (``wsfixture.model.fields``), nested tables and lists of them, and the JSON Schema
of a table. Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from wsfixture.model.fields import (
    INVALID,
    REQUIRED,
    Collector,
    Context,
    camel,
    declarations,
    declared,
    default_of,
    is_required,
    keys,
    snake,
    to_data,
)
from wsfixture.suggest import did_you_mean

# -- sections: a table of declared fields -------------------------------------------------


def table_keys(
    data: object, where: str, known: tuple[str, ...], issues: Collector
) -> dict[str, Any] | None:
    """Normalise keys to snake_case; reject non-mappings, unknown and doubled keys."""
    if not isinstance(data, Mapping):
        issues.add(where, "must be a table/object", data, "a mapping of keys to values")
        return None
    out: dict[str, Any] = {}
    camel_keys = [camel(k) for k in known]
    for key, value in data.items():
        norm = snake(str(key))
        if norm not in known:
            spellings = known if "_" in str(key) else camel_keys
            hint = did_you_mean(key, spellings)
            issues.add(f"{where}.{key}", f"unknown key{hint}", allowed=", ".join(camel_keys))
        elif norm in out:
            issues.add(f"{where}.{key}", "given twice (camelCase and snake_case)")
        elif value is not None:  # nix eval prints null for unset options: take the default
            out[norm] = value
    return out


def parse_fields(
    cls: type, raw: Mapping[str, Any], where: str, ctx: Context
) -> tuple[dict[str, Any], bool]:
    """The declared fields of ``cls`` parsed from ``raw`` (already key-normalised): the
    values given, the defaults computed from earlier fields; and whether all were valid.
    Fields left out take the dataclass default."""
    ctx = dataclasses.replace(ctx, parsed={})
    ok = True
    for f, decl in declarations(cls):
        here = f"{where}.{camel(f.name)}"
        if f.name in raw:
            value = decl.parse(raw[f.name], here, ctx)
            if value is INVALID:
                ok = False
                continue
            ctx.parsed[f.name] = value
        elif is_required(f):
            decl.parse(REQUIRED, here, ctx)  # the parser says what is allowed
            ok = False
        elif decl.default_from is not None:
            ctx.parsed[f.name] = decl.default_from(ctx.parsed)
        else:  # later fields see the default (a gateway is checked against the default subnet)
            ctx.parsed[f.name] = default_of(f)
    return ctx.parsed, ok


def section(cls: type, doc: str, check: Callable[[Any, str, Context], bool] | None = None) -> Any:
    """A nested table of ``cls``'s declared fields; ``check`` looks across its fields."""

    def parse(value: object, where: str, ctx: Context) -> Any:
        raw = table_keys(value, where, keys(cls), ctx.issues)
        if raw is None:
            return INVALID
        fields_, ok = parse_fields(cls, raw, where, ctx)
        if not ok:
            return INVALID
        made = cls(**fields_)
        return made if check is None or check(made, where, ctx) else INVALID

    return declared(doc=doc, parse=parse, schema=schema_of(cls), to_data=to_data, factory=cls)


def section_list(
    cls: type, doc: str, check: Callable[[tuple[Any, ...], str, Context], None] | None = None
) -> Any:
    """A list of tables of ``cls``; the good ones are kept. ``check`` looks across them."""

    def parse(value: object, where: str, ctx: Context) -> Any:
        what = ", ".join(camel(k) for k in keys(cls))
        if not isinstance(value, list):
            ctx.issues.add(where, "must be a list", value, f"a list of {{{what}}} tables")
            return INVALID
        items = []
        for index, item in enumerate(value):
            here = f"{where}[{index}]"
            raw = table_keys(item, here, keys(cls), ctx.issues)
            if raw is None:
                continue
            fields_, ok = parse_fields(cls, raw, here, ctx)
            if ok:
                items.append(cls(**fields_))
        made = tuple(items)
        if check is not None:
            check(made, where, ctx)
        return made

    schema = {"type": "array", "items": schema_of(cls)}
    return declared(
        (), doc=doc, parse=parse, schema=schema, to_data=lambda v: [to_data(i) for i in v]
    )


# -- JSON Schema ----------------------------------------------------------------------------


def schema_of(cls: type) -> dict[str, Any]:
    """A JSON Schema object for ``cls``'s declared fields. Both spellings of a key are
    accepted, as the validator accepts them, but not both at once; null means "the default",
    as in ``nix eval`` output, except for a required field."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    exclusive: list[dict[str, Any]] = []
    for f, decl in declarations(cls):
        alias = camel(f.name)
        schema: dict[str, Any] = {"description": decl.doc}
        if is_required(f):
            schema.update(decl.schema)
            required.append(alias)
        else:
            schema["anyOf"] = [dict(decl.schema), {"type": "null"}]
            if default_of(f) is not None and decl.default_from is None:
                schema["default"] = decl.to_data(default_of(f))
        properties[alias] = schema
        if alias != f.name:
            properties[f.name] = {**schema, "description": f"{decl.doc} (same as {alias})"}
            exclusive.append({"not": {"required": [alias, f.name]}})
    out: dict[str, Any] = {"type": "object", "properties": properties}
    out["additionalProperties"] = False
    # Required under either spelling; never both spellings at once.
    either = [{"anyOf": [{"required": [key]}, {"required": [snake(key)]}]} for key in required]
    if either or exclusive:
        out["allOf"] = either + exclusive
    return out
