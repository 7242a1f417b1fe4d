"""The error tree drawn in errors.py is the tree the code has, and its root is never raised."""

from __future__ import annotations

import importlib
import pkgutil
import re
import textwrap
from pathlib import Path

import wsfixture
from wsfixture import errors


def all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def test_the_drawing_lists_every_error_with_its_parent() -> None:
    for module in pkgutil.walk_packages(wsfixture.__path__, "wsfixture."):
        if not module.name.endswith("__main__"):  # that one runs the CLI
            importlib.import_module(module.name)
    drawn = {}  # name -> parent name, read from the box drawing's indentation
    stack: list[tuple[int, str]] = []
    drawing = [line for line in (errors.__doc__ or "").splitlines() if line.startswith("    ")]
    for line in drawing:
        match = re.match(r"^(\s*(?:[│ ]   )*)(?:├── |└── )?([A-Z]\w+)\s", line + " ")
        if not match or not re.search(r"Error|Timeout|Gone|Paused|Failed", match.group(2)):
            continue
        depth = len(match.group(1)) // 4 + (1 if "── " in line else 0)
        stack = [(d, n) for d, n in stack if d < depth]
        drawn[match.group(2)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(2)))
    classes = {cls.__name__: cls for cls in all_subclasses(errors.WsfixtureError)}
    assert set(drawn) - {"WsfixtureError"} == set(classes)
    for name, cls in classes.items():
        parent = next(b for b in cls.__mro__[1:] if issubclass(b, errors.WsfixtureError))
        assert drawn[name] == parent.__name__, name


def test_the_errors_page_shows_the_drawing_as_it_is() -> None:
    drawing = (errors.__doc__ or "").split("::\n\n", 1)[1].split("\n\n", 1)[0]
    page = (Path(__file__).parents[2] / "docs" / "reference" / "errors.md").read_text()
    assert textwrap.dedent(drawing) in page


def test_the_root_is_never_raised_itself() -> None:
    source = Path(wsfixture.__file__).parent
    raised = [
        f"{path.relative_to(source)}:{number}"
        for path in source.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"raise WsfixtureError\(", line)
    ]
    assert raised == []


def test_timeouts_are_timeout_errors_and_keep_their_output() -> None:
    error = errors.CommandTimeout("a", "sleep 9", 3.0, "partial", "")
    assert isinstance(error, TimeoutError)
    assert isinstance(error, errors.CommandError)
    assert error.stdout == "partial"
    assert "timed out after 3.0s" in str(error)
    assert isinstance(errors.WaitTimeout("a", "port 80", 1.0, "closed"), TimeoutError)


def test_an_unknown_name_says_where_it_was_looked_for() -> None:
    from wsfixture.suggest import looked_in, unknown_workspace

    assert unknown_workspace(["nosuch"], ["alpha"], looked_in("")) == (
        "no workspace named 'nosuch' (no --ws-config given); known: alpha"
    )
    assert unknown_workspace(["alpah"], ["alpha"], looked_in("ws.toml")) == (
        "no workspace named 'alpah' in ws.toml; did you mean 'alpha'? known: alpha"
    )
