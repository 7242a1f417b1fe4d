"""What installs wsfixture says the same thing everywhere: pyproject.toml and the flake."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_flake_packages_pyprojects_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {
        re.split(r"[<>=!~\s\[]", dep, maxsplit=1)[0] for dep in pyproject["project"]["dependencies"]
    }
    flake = (ROOT / "flake.nix").read_text()
    found = re.search(r"dependencies = with pkgs\.python3Packages; \[([^\]]*)\];", flake)
    assert found, "the flake's package has no dependencies list"
    assert set(found.group(1).split()) == wanted
    assert "argcomplete" in wanted, "cli/main.py imports it on every start"


def test_the_architecture_layout_names_every_package_and_module() -> None:
    readme = (ROOT / "ARCHITECTURE.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    package = ROOT / "src" / "wsfixture"
    for entry in sorted(package.iterdir()):
        if entry.is_dir() and (entry / "__init__.py").exists():
            assert f"{entry.name}/" in layout, f"ARCHITECTURE.md's layout lacks {entry.name}/"
            for module in sorted(entry.rglob("*.py")):
                if module.stem not in ("__init__", "__main__"):
                    assert re.search(rf"\b{module.stem}\b", layout), f"no {module} in the layout"
        elif entry.suffix == ".py" and entry.stem != "__init__":
            assert entry.name in layout, f"ARCHITECTURE.md's layout lacks {entry.name}"


def test_the_readme_is_a_front_door_and_every_page_is_in_the_site() -> None:
    """The README fits on a page and links into the docs; every page under docs/ is in
    mkdocs.yml's nav, and every page the README links to exists."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    for heading in ("## Two commands", "make demo", "make test", "## Install with pip"):
        assert heading in readme
    linked = re.findall(r"\]\(((?:docs/|CONTRIBUTING|ARCHITECTURE)[^)#]*)\)", readme)
    assert linked, "the README links into the docs"
    for target in linked:
        assert (ROOT / target).is_file(), target
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs").rglob("*.md")):
        assert str(page.relative_to(ROOT / "docs")) in nav, f"{page} is in no nav entry"


def test_the_handle_s_public_names_are_the_documented_verbs_and_facts() -> None:
    """The handle shows a test or a script its verbs (the API reference lists each) and a
    few facts; what only the plugin and the CLI use (launching, attaching, the backend,
    the SSH session, the runtime directory, ...) has a leading underscore."""
    from wsfixture.workspaces import Workspace

    page = (ROOT / "docs" / "reference" / "api.md").read_text()
    options = r"Workspace\n    options:\n(?:      \w+: \w+\n)*"
    listed = re.search(options + r"      members: \[([^\]]*)\]", page)
    assert listed is not None
    verbs = {name.strip() for name in listed[1].split(",")}
    facts = {"spec", "config", "lab", "state_dir", "timeout", "command_timeout",
             "discard_at_stop", "state", "ready_seconds", "stop_seconds"}  # fmt: skip
    public = {name for name in dir(Workspace) if not name.startswith("_")}
    made = "".join(  # what its methods set
        (ROOT / f"src/wsfixture/workspaces/{name}.py").read_text() for name in ("machine", "handle")
    )
    assigned = set(re.findall(r"^        self\.([a-z]\w*)(?:: [^=]+)? = ", made, re.MULTILINE))
    assert public == verbs, "the handle's methods and properties are the documented verbs"
    assert assigned == facts, "and the attributes it sets are the documented facts"


# ARCHITECTURE.md's arrows: each module's layer, bottom first (the longest prefix decides).
LAYERS = (
    ("errors", "retry", "cleanup", "suggest", "progress"),
    ("model",),
    ("host",),
    ("guest",),
    ("image", "net"),
    ("backends",),
    ("workspaces", "remote", "process", "copying", "checks", "relay"),
    ("plugin", "cli", "api", ""),  # "": the package's own __init__
)


def import_graph() -> dict[str, set[str]]:
    """Every module of src/wsfixture -> the modules of it that it imports, at the top, in
    a function, or under TYPE_CHECKING."""
    import ast

    src = ROOT / "src"
    modules = {
        ".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (src / "wsfixture").rglob("*.py")
    }

    def module_of(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wsfixture"):
                for alias in node.names:
                    whole = f"{node.module}.{alias.name}"
                    found.add(whole if whole in modules else module_of(node.module or "") or "")
            elif isinstance(node, ast.Import):
                found |= {module_of(a.name) or "" for a in node.names}
        graph[name] = {m for m in found if m.startswith("wsfixture") and m != name}
    return graph


def layer_of(module: str) -> int:
    inner = module.removeprefix("wsfixture").removeprefix(".")
    best = max(
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if inner == prefix or inner.startswith(f"{prefix}.") or prefix == ""
    )
    return best[1]


def test_imports_point_down_and_never_come_back() -> None:
    """No module imports one of a higher layer, and no import circle (lazy and
    TYPE_CHECKING imports counted): a change to one module never pulls a higher one in."""
    graph = import_graph()
    up = sorted(
        f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)
    )
    assert up == []
    seen: dict[str, int] = {}  # 1: on the path, 2: done
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(graph[module]):
            if seen.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in seen:
                visit(target, [*path, target])
        seen[module] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert circles == []


def test_no_module_is_over_400_lines_but_the_field_declarations() -> None:
    """A module that grows past 400 lines holds more than one concern: split it (the
    field declarations, one per config field kind, are the one table that may)."""
    long = {
        str(path.relative_to(ROOT)): count
        for path in (ROOT / "src" / "wsfixture").rglob("*.py")
        if (count := len(path.read_text().splitlines())) > 400
    }
    assert set(long) <= {"src/wsfixture/model/fields.py"}, long
