import json
from pathlib import Path

import pytest

from wsfixture.cli import main as cli
from wsfixture.model.config import load_config
from wsfixture.model.plan import plan

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "workspaces.toml")


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", EXAMPLE, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [w["name"] for w in data["workspaces"]]
    assert names == ["myproject", "sandbox"]
    box = data["workspaces"][1]
    assert box["mac"].startswith("02:")
    assert box["interfaces"]["tap"].startswith("wst-")
    assert box["aliases"][0] == "workspace_sandbox"
    assert box["stateDirs"]["workspace"].endswith("sandboxed/sandbox/workspace")


def test_plan_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert "myproject  (container)" in out
    assert "192.168.83.11 sandbox workspace-sandbox" in out


def test_validate_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", EXAMPLE]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[workspaces.a]\nip = "1.2.3.4"\n[workspaces.b]\ntype = "vm"\nip = "x"\n')
    assert cli.main(["validate", str(bad)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "3 problems" in err
    assert "Traceback" not in err


def test_plan_matches_derivations() -> None:
    data = plan(load_config(EXAMPLE))
    for entry in data["workspaces"]:
        assert entry["hostsLine"] == f"{entry['ip']} {entry['name']} workspace-{entry['name']}"
