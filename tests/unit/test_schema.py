"""`wsfixture schema`: the JSON Schema made from the field declarations agrees with the
validator. What the schema accepts, the validator accepts but for the checks across fields
that a schema cannot make; what the schema rejects, the validator rejects."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.strategies import documents, valid_configs
from wsfixture import ConfigError, config_from_dict
from wsfixture.cli import main as cli
from wsfixture.model import fields, schema
from wsfixture.model.config import load_config
from wsfixture.model.spec import WorkspaceSpec

VALIDATOR = jsonschema.Draft202012Validator(schema.config_schema())
README = Path(__file__).parents[2] / "docs" / "guides" / "config.md"  # the config guide
EXAMPLE = Path(__file__).parents[2] / "examples" / "workspaces.toml"
# What only the validator can see: it needs another field or another workspace (the
# subnet, the range, uniqueness), arithmetic a pattern cannot do (a subnet's host bits,
# a size string's range), or the host's disk (a file to put into an image).
BEYOND_THE_SCHEMA = re.compile(
    r"outside the subnet|gateway's address|outside the usable range|already used by|"
    r"is after rangeEnd|differs from the workspace's key|is out of range \(got '|host bits set|"
    r"does not exist|is not a regular file"
)


def schema_accepts(document: object) -> bool:
    return VALIDATOR.is_valid(document)


def validator_problems(document: object) -> list[str]:
    try:
        config_from_dict(document)
    except ConfigError as exc:
        return [str(issue) for issue in exc.issues]
    return []


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema.config_schema())


def test_the_example_is_accepted_by_both() -> None:
    import tomllib

    document = tomllib.loads(EXAMPLE.read_text())
    assert schema_accepts(document)
    assert load_config(EXAMPLE).workspaces


def test_every_declared_field_is_in_the_schema_in_both_spellings() -> None:
    properties = schema.workspace_schema()["properties"]
    for key in fields.keys(WorkspaceSpec):
        assert key in properties
        assert fields.camel(key) in properties


GOOD: list[dict[str, Any]] = [
    {},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "disk": "8G", "vcpu": 2}}},
    {"workspaces": {"a": {"type": "container", "ip": "192.168.83.10", "auto_start": True}}},
    {"network": {"subnet": "10.20.0.0/24"},
     "workspaces": {"a": {"type": "vm", "ip": "10.20.0.50"}}},
    {"defaults": {"user": {"name": "alice", "uid": 1500}, "packages": ["git"]}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "memory": None}}},
    {"network": {"internet": True, "uplinkNamespace": "vpn"},
     "workspaces": {"a": {"type": "container", "ip": "192.168.83.10", "internet": False,
                          "forwards": {"8080": 80, "2222": 22}}}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10",
                          "shares": [{"source": "/srv", "target": "/mnt/srv", "readOnly": True}]}}},
]  # fmt: skip
BAD: list[dict[str, Any]] = [
    {"workspaces": {"a": {"ip": "192.168.83.10"}}},
    {"workspaces": {"a": {"type": "box", "ip": "192.168.83.10"}}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "memroy": 512}}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "vcpu": 0}}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "vcpu": True}}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "autoStart": 1, "auto_start": 1}}},
    {"workspaces": {"A!": {"type": "vm", "ip": "192.168.83.10"}}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "disk": "lots"}}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "shares": [{"source": "rel"}]}}},
    {"defaults": {"user": {"name": "root"}}},
    {"network": {"subnet": "10.0.0.0/33"}},
    {"network": {"bridge": "a-very-long-bridge-name"}},
    {"enable": "yes"},
    {"network": {"internet": "maybe"}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "forwards": {"8080": 70000}}}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "forwards": {"0": 80}}}},
    {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "internet": 1}}},
    {"workspaces": []},
]  # fmt: skip


@pytest.mark.parametrize("document", GOOD)
def test_accepted_by_both(document: dict[str, Any]) -> None:
    assert schema_accepts(document)
    assert validator_problems(document) == []


@pytest.mark.parametrize("document", BAD)
def test_rejected_by_both(document: dict[str, Any]) -> None:
    assert not schema_accepts(document)
    assert validator_problems(document)


@given(valid_configs())
def test_generated_valid_configs_are_accepted_by_both(document: dict[str, Any]) -> None:
    assert schema_accepts(document)
    assert validator_problems(document) == []


@given(st.one_of(documents, valid_configs().map(lambda d: {**d, "bogus": 1})))
def test_the_two_agree_on_any_document(document: object) -> None:
    problems = validator_problems(document)
    if not schema_accepts(document):
        assert problems, "the schema rejects what the validator accepts"
    else:
        left = [p for p in problems if not BEYOND_THE_SCHEMA.search(p)]
        assert left == [], "the validator rejects what the schema accepts"


def test_schema_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema.config_schema()


def test_the_config_guide_s_option_table_is_the_generated_one() -> None:
    assert schema.options_table() in README.read_text()
