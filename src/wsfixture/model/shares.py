"""The seed's standard shares, declared once: the directories under ``<state root>/<name>``
that every workspace gets, where each is mounted, whether it is read-only, and whose the
host side is. The model, the backends, ``prepare`` and the NixOS module's parity test read
this table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StandardShare:
    """One of the seed's directories under ``<state root>/<name>``, shared into every
    workspace; the only ones that outlive it."""

    tag: str
    guest_path: str  # "~/" stands for the workspace user's home
    read_only: bool
    owner: str  # whose the host side is: "user" (the workspace user) or "root"

    def target(self, user: str) -> str:
        """Where it is mounted in the guest of workspace user ``user``."""
        home_relative = self.guest_path.removeprefix("~/")
        return (
            self.guest_path if home_relative == self.guest_path else f"/home/{user}/{home_relative}"
        )


# In mount order (a share's tag and its hot-plug slot follow it).
STANDARD_SHARE_TABLE: tuple[StandardShare, ...] = (
    StandardShare("workspace", "~/workspace", read_only=False, owner="user"),
    StandardShare("claude-config", "~/.claude", read_only=False, owner="user"),
    StandardShare("ssh-host-keys", "/etc/ssh/host-keys", read_only=True, owner="root"),
)
STANDARD_SHARES = tuple(s.tag for s in STANDARD_SHARE_TABLE)
READ_ONLY_STANDARD_SHARES = tuple(s.tag for s in STANDARD_SHARE_TABLE if s.read_only)
WRITABLE_STANDARD_SHARES = tuple(s.tag for s in STANDARD_SHARE_TABLE if not s.read_only)


def standard_share_targets(user: str) -> dict[str, str]:
    """Where each standard share is mounted in the guest, by tag."""
    return {share.tag: share.target(user) for share in STANDARD_SHARE_TABLE}
