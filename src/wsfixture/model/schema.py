"""The config as a JSON Schema (``wsfixture schema``) and as a table for the docs, both
made from the model's field declarations. Pure.

Editors that read JSON Schema check ``workspaces.toml`` as you type (Even Better TOML:
``#:schema ./wsfixture.schema.json`` on the first line). The schema says everything a
field says on its own; what looks across fields stays with the validator: an address
inside the subnet and its range, addresses and derived identities unique in the config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from wsfixture.model import fields, tables
from wsfixture.model.spec import (
    NAME_MAX,
    NAME_RE,
    Config,
    Defaults,
    NetworkSpec,
    ShareSpec,
    UserSpec,
    WorkspaceSpec,
)

SCHEMA_ID = "https://wsfixture.invalid/workspaces.schema.json"  # a name, never fetched


def workspace_schema() -> dict[str, Any]:
    schema = tables.schema_of(WorkspaceSpec)
    schema["properties"]["name"] = {
        "type": "string",
        "pattern": NAME_RE.pattern,
        "maxLength": NAME_MAX,
        "description": "the workspace's name; its key in `workspaces` already says it",
    }
    return schema


def config_schema() -> dict[str, Any]:
    """The whole config document."""
    schema = tables.schema_of(Config)
    schema["properties"]["workspaces"] = {
        "description": "the workspaces, by name",
        "anyOf": [
            {
                "type": "object",
                "propertyNames": {"pattern": NAME_RE.pattern, "maxLength": NAME_MAX},
                "additionalProperties": workspace_schema(),
            },
            {"type": "null"},
        ],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "wsfixture workspaces config",
        **schema,
    }


def options_table() -> str:
    """Every option as a Markdown table: key, default, what it is (the README's)."""
    rows = ["| option | default | what it is |", "|---|---|---|"]
    sections = (
        ("network.", NetworkSpec),
        ("defaults.", Defaults),
        ("defaults.user.", UserSpec),
        ("workspaces.<name>.", WorkspaceSpec),
        ("workspaces.<name>.shares[].", ShareSpec),
    )
    for prefix, cls in sections:
        for f, decl in fields.declarations(cls):
            if dataclasses.is_dataclass(fields.default_of(f)):
                continue  # a table of its own, listed with its prefix
            if fields.is_required(f):
                default = "required"
            elif decl.default_from is not None:
                default = "derived"
            else:
                default = _shown(decl.to_data(fields.default_of(f)))
            vm = " (VMs)" if decl.vm_only else ""
            rows.append(f"| `{prefix}{fields.camel(f.name)}` | {default} | {decl.doc}{vm} |")
    return "\n".join(rows)


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, list):
        return "`[]`" if not value else f"`{value}`"
    return f"`{value}`"
