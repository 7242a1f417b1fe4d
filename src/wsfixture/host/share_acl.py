"""The default ACL that lets a workspace edit what host root puts into its shares.

A rw share maps only two ids (``model.share_ids``): host root is never one of them, so a
file that host root (wsfixture itself, or a person with sudo) puts into ``workspace/``
would be nobody's inside and read-only there. A default ACL on the share's directory gives
every file and directory made below it afterwards an entry for the share owner (the
workspace user inside) and for ``SQUASHED_ROOT`` (the workspace's root inside), each
``rwx`` as far as the file's own mode allows: the ACL mask is the new file's group bits,
so a file made with mode 0666 or 0777 (editors, git, shell redirection) is theirs to
edit, and a file copied with its 0644 mode kept is theirs to read.

Written as the ``system.posix_acl_default`` xattr (its binary form), so no ``acl`` package
is needed.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from wsfixture.model.share_ids import SQUASHED_ROOT

ACL_XATTR_VERSION = 2
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
DEFAULT_ACL = "system.posix_acl_default"
RWX, RX = 7, 5


def default_acl(owner_uid: int) -> bytes:
    """The xattr value: the owner and the squashed root named, entries in the kernel's order
    (by tag, then id)."""
    users = sorted({owner_uid, SQUASHED_ROOT})
    entries = [(ACL_USER_OBJ, RWX, 0xFFFFFFFF)]
    entries += [(ACL_USER, RWX, uid) for uid in users]
    entries += [(ACL_GROUP_OBJ, RX, 0xFFFFFFFF), (ACL_MASK, RWX, 0xFFFFFFFF)]
    entries += [(ACL_OTHER, RX, 0xFFFFFFFF)]
    body = b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)
    return struct.pack("<I", ACL_XATTR_VERSION) + body


def grant(directory: Path, owner_uid: int) -> None:
    """Set the share's default ACL (idempotent: the same value each time)."""
    value = default_acl(owner_uid)
    try:
        if os.getxattr(directory, DEFAULT_ACL) == value:
            return
    except OSError:
        pass
    os.setxattr(directory, DEFAULT_ACL, value)
