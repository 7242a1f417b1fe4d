"""Who owns a share's files on each side: pure arithmetic, no system call.

A read-write share keeps the workspace user's files as the share owner's on the host (what
makes a share useful: edit it from either side), and puts everything the workspace's root
makes under one unprivileged host id, ``SQUASHED_ROOT``, that owns nothing else on the host.
No other guest id can make files there, and no guest id is host root on it: host root's
files show as ``nobody`` inside, and the workspace reaches them through the share's default
ACL (see ``host.share_acl``).

The share owner is its source directory's owner, unless that is host root, whose id is
never handed out: then the workspace user's own uid stands in (as for the standard shares,
which wsfixture makes and gives to that uid).

Both kinds use one map, in the two forms the kernel wants:
- a container's share is an idmapped mount: a user namespace whose "inside" ids are the
  ids on disk and whose "outside" ids are what the container's processes are on the host
  (container id N is host id ``CONTAINER_UID_BASE + N``);
- a VM's virtiofsd runs in a user namespace whose inside ids are the guest's (it switches
  to the guest caller's uid for every file it makes) and whose outside ids are on disk.
"""

from __future__ import annotations

from dataclasses import dataclass

# Container workspaces run in a user namespace: container uid N is host uid BASE + N, for N
# below COUNT. One range for every container, so images are stored shifted once and shared
# (no chown at boot; systemd 252 cannot idmap an overlayfs root). Containers then share
# host uids with each other, but not a mount, PID or network namespace, nor any file but
# their own shares. The range sits high above any login's and systemd's dynamic users.
CONTAINER_UID_BASE = 1 << 30
CONTAINER_UID_COUNT = 65536

# Just below the containers' range: unused on a host, not nobody (which daemons share),
# not an id any container runs as.
SQUASHED_ROOT = CONTAINER_UID_BASE - 1
# What host root's files are to a container's share mount: an id outside the container's
# range, so no process there can be it (make, chown or chmod such files), yet a valid one:
# the kernel refuses every write to a file whose owner an idmapped mount leaves unmapped,
# and the ACL that lets the workspace user edit host root's files would count for nothing.
HOST_ROOT_IN_CONTAINER_SHARES = CONTAINER_UID_BASE - 2

IdMap = list[tuple[int, int, int]]  # (inside, outside, count): a line of uid_map


@dataclass(frozen=True)
class ShareOwners:
    """The two guest ids a rw share knows, and their host ids."""

    host_uid: int
    host_gid: int
    guest_uid: int
    guest_gid: int

    @classmethod
    def of(cls, owner_uid: int, owner_gid: int, guest_uid: int, guest_gid: int) -> ShareOwners:
        """A share whose source is owned by ``owner_uid:owner_gid``: host root stands for
        the workspace user's own ids, never for itself."""
        if owner_uid == 0:
            owner_uid = guest_uid
        if owner_gid == 0:
            owner_gid = guest_gid
        return cls(owner_uid, owner_gid, guest_uid, guest_gid)

    def container_mount(self) -> tuple[IdMap, IdMap]:
        """(uid map, gid map) of a container share's idmapped mount: disk -> container."""
        base, root = CONTAINER_UID_BASE, (0, HOST_ROOT_IN_CONTAINER_SHARES, 1)
        uids = [root, (SQUASHED_ROOT, base, 1), (self.host_uid, base + self.guest_uid, 1)]
        gids = [root, (SQUASHED_ROOT, base, 1), (self.host_gid, base + self.guest_gid, 1)]
        return uids, gids

    def virtiofsd_namespace(self) -> tuple[IdMap, IdMap]:
        """(uid map, gid map) of a VM share daemon's user namespace: guest -> disk."""
        uids = [(0, SQUASHED_ROOT, 1), (self.guest_uid, self.host_uid, 1)]
        gids = [(0, SQUASHED_ROOT, 1), (self.guest_gid, self.host_gid, 1)]
        return uids, gids


def map_text(lines: IdMap) -> str:
    """The text /proc/PID/uid_map takes."""
    return "".join(f"{inside} {outside} {count}\n" for inside, outside, count in lines)
