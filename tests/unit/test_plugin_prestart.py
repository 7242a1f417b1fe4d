"""Which workspaces may start before their test (``--ws-prestart``), and which test asks
for which workspace: pure logic over markers and parameters."""

from __future__ import annotations

from typing import Any

import pytest

from wsfixture.plugin.prestart import marker_args, param_of, prestart_key


def test_an_inline_vm_may_start_early_and_its_key_ignores_the_order_of_fields() -> None:
    one = prestart_key(None, {"type": "vm", "vcpu": 1, "memory": 768}, "vm")
    assert one is not None
    assert one == prestart_key(None, {"memory": 768, "vcpu": 1, "type": "vm"}, "vm")
    assert one != prestart_key(None, {"type": "vm", "vcpu": 2, "memory": 768}, "vm")


def test_how_it_is_held_is_not_part_of_what_it_is() -> None:
    fields = {"type": "vm"}
    assert prestart_key(None, {**fields, "scope": "function"}, "vm") == prestart_key(
        None, fields, "vm"
    )


@pytest.mark.parametrize(
    ("name", "fields", "wanted", "why"),
    [
        ("alpha", {"type": "vm"}, "vm", "a named one: the running test may hold its name"),
        (None, {"type": "vm", "ip": "192.168.83.40"}, "vm", "its address is fixed"),
        (None, {"type": "vm", "scope": "module"}, "vm", "a shared one boots once anyway"),
        (None, {"type": "vm"}, "off", "turned off"),
        (None, {"type": "container"}, "vm", "containers only with `all`"),
        (None, {}, "vm", "an inline workspace is a container unless it says"),
    ],
)
def test_what_may_not_start_early(
    name: str | None, fields: dict[str, Any], wanted: str, why: str
) -> None:
    assert prestart_key(name, fields, wanted) is None, why


def test_all_takes_containers_too() -> None:
    assert prestart_key(None, {}, "all") is not None
    assert prestart_key(None, {"type": "container"}, "all") is not None


class Item:
    """The parts of a collected test that marker_args and param_of read."""

    def __init__(self, marker: pytest.Mark | None, params: dict[str, object] | None) -> None:
        self.marker = marker
        if params is not None:
            self.callspec = type("CallSpec", (), {"params": params})()

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return self.marker if name == "workspace" else None


def mark(*args: object, **kwargs: object) -> pytest.Mark:
    return pytest.mark.workspace(*args, **kwargs).mark


@pytest.mark.parametrize(
    ("marker", "params", "asked"),
    [
        (None, None, (None, {})),
        (mark("alpha", packages=["git"]), None, ("alpha", {"packages": ["git"]})),
        (mark(name="beta", type="vm"), None, ("beta", {"type": "vm"})),
        (mark(vcpu=1), {"workspace": "vm"}, (None, {"vcpu": 1, "type": "vm"})),
        (mark(vcpu=1), {"workspace": "alpha"}, ("alpha", {"vcpu": 1})),
        (None, {"workspace": {"type": "vm", "memory": 768}}, (None, {"type": "vm", "memory": 768})),
        (mark(type="vm"), {"other": 3}, (None, {"type": "vm"})),
    ],
)
def test_the_workspace_a_test_asks_for(
    marker: pytest.Mark | None,
    params: dict[str, object] | None,
    asked: tuple[str | None, dict[str, Any]],
) -> None:
    item = Item(marker, params)
    assert marker_args(item, param_of(item)) == asked  # type: ignore[arg-type]
