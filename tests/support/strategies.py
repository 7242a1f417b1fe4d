"""Config generators for the property tests: valid configs, the ways to break one, and
arbitrary documents."""

from __future__ import annotations

from hypothesis import strategies as st

names = st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, object]:
    chosen = draw(st.lists(names, min_size=0, max_size=6, unique=True))
    hosts = draw(st.lists(st.integers(10, 254), min_size=len(chosen), max_size=len(chosen),
                          unique=True))  # fmt: skip
    workspaces = {}
    for name, host in zip(chosen, hosts, strict=True):
        entry: dict[str, object] = {
            "type": draw(st.sampled_from(["vm", "container"])),
            "ip": f"192.168.83.{host}",
        }
        if draw(st.booleans()):
            entry["vcpu"] = draw(st.integers(1, 256))
        if draw(st.booleans()):
            entry["autoStart"] = draw(st.booleans())
        if draw(st.booleans()):
            entry["packages"] = draw(st.lists(st.sampled_from(["git", "curl", "vim"]), max_size=3))
        workspaces[name] = entry
    return {"workspaces": workspaces}


corruptions = st.sampled_from(
    [
        ("type", "bogus"), ("type", None), ("ip", "999.1.1.1"), ("ip", 42), ("ip", "192.168.83.1"),
        ("vcpu", -1), ("vcpu", "two"), ("memory", 10**9), ("disk", "huge"), ("packages", "git"),
        ("packages", ["Not Valid"]), ("autoStart", "yes"), ("unknownKey", 1), ("shares", [1]),
        ("machine", "pc-i440fx"), ("accel", "hvf"), ("config", 3),
    ]
)  # fmt: skip


documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
