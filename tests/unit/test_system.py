"""Pure helpers of wsfixture.host.system."""

from __future__ import annotations

from wsfixture.host.system import _unescape


def test_mountinfo_escapes_are_decoded() -> None:
    # /proc/self/mountinfo writes space, tab, newline and backslash as \ooo.
    assert _unescape(r"/var/lib/my\040dir") == "/var/lib/my dir"
    assert _unescape(r"/a\011b\012c\134d") == "/a\tb\nc\\d"
    assert _unescape("/plain/path") == "/plain/path"
