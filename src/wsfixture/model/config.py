"""The unified workspace configuration: one model and one validator for every source.

Sources: a TOML file, the JSON that ``nix eval --json .#...config.sandboxed-workspace``
prints, or Python dicts and keyword arguments. Keys may be camelCase, as in Nix
(``autoStart``), or snake_case, as in Python (``auto_start``); both mean the same field.

Validation (``wsfixture.model.validation``) is strict and complete: every problem of a document
is raised together in one ``ConfigError`` before anything is created. Nothing here touches
the system. The model itself lives in ``wsfixture.model.spec`` and is re-exported here.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from wsfixture.errors import ConfigError, ConfigIssue
from wsfixture.model.shares import STANDARD_SHARES
from wsfixture.model.spec import (
    WORKSPACE_TYPES,
    Config,
    Defaults,
    NetworkSpec,
    ShareSpec,
    UserSpec,
    WorkspaceSpec,
    WorkspaceType,
)
from wsfixture.model.validation import Collector, camel, parse_config, parse_workspace

__all__ = [
    "STANDARD_SHARES",
    "WORKSPACE_TYPES",
    "Config",
    "Defaults",
    "NetworkSpec",
    "ShareSpec",
    "UserSpec",
    "WorkspaceSpec",
    "WorkspaceType",
    "config_from_dict",
    "config_from_json",
    "config_from_toml",
    "load_config",
    "override",
    "workspace_spec",
]


def load_config(path: str | Path) -> Config:
    """Load and validate a config file; ``.json`` is read as JSON, anything else as TOML."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), f"cannot read file: {exc.strerror}")]) from exc
    # Relative host paths in it (files, share sources, stateRoot) are the file's directory's.
    base_dir = path.resolve().parent
    if path.suffix == ".json":
        return config_from_json(text, source=str(path), base_dir=base_dir)
    return config_from_toml(text, source=str(path), base_dir=base_dir)


def config_from_toml(text: str, source: str = "<toml>", base_dir: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue(source, f"TOML syntax error: {exc}")], source) from exc
    return config_from_dict(data, source=source, base_dir=base_dir)


def config_from_json(text: str, source: str = "<json>", base_dir: Path | None = None) -> Config:
    """Read ``nix eval --json`` output of ``config.sandboxed-workspace`` (or the same shape)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"JSON syntax error: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise ConfigError([ConfigIssue(source, problem)], source) from exc
    return config_from_dict(data, source=source, base_dir=base_dir)


def config_from_dict(data: object, source: str = "<dict>", base_dir: Path | None = None) -> Config:
    """Validate a plain mapping (from any source) into a ``Config``. ``base_dir``: what
    relative host paths in it are relative to (none: they are refused)."""
    issues = Collector()
    config = parse_config(data, issues, source, base_dir)
    issues.raise_if_any(source)
    assert config is not None
    return config


def workspace_spec(config: Config | None = None, **fields: Any) -> WorkspaceSpec:
    """Build one workspace from Python keyword arguments, validated against ``config``."""
    config = config or Config()
    issues = Collector()
    name = fields.pop("name", None)
    spec = parse_workspace(name, fields, config.network, issues, "workspace")
    issues.raise_if_any(config.source or "<kwargs>")
    assert spec is not None
    return spec


def override(config: Config, spec: WorkspaceSpec, **fields: Any) -> WorkspaceSpec:
    """``spec`` with some fields replaced (either key spelling), validated again."""
    merged = {**spec.to_dict(), **{camel(key): value for key, value in fields.items()}}
    return workspace_spec(config, name=spec.name, **merged)
