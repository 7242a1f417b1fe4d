"""The shared base every workspace gets, written into its own layer before it boots.

Hostname, machine-id, systemd-networkd with the static address, the user with its authorized
keys, passwordless doas for that user (and root), the persisted SSH host key. ``render`` is
pure (it returns the files to write); ``write`` puts them into a root directory: a
container's overlay, or the staging tree of a VM's seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from wsfixture.errors import ConfigError, ConfigIssue
from wsfixture.host import inroot
from wsfixture.model import derive
from wsfixture.model.config import Config, UserSpec, WorkspaceSpec


@dataclass(frozen=True)
class File:
    content: str
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Identity:
    """Everything that makes one workspace itself."""

    name: str
    type: str
    ip: str
    prefixlen: int
    gateway: str
    dns: bool
    user: UserSpec
    authorized_keys: tuple[str, ...]
    host_key_private: str
    host_key_public: str
    privilege: str = "doas"  # what host.sudo() uses; doas is always there for wsfixture

    @classmethod
    def of(
        cls, config: Config, spec: WorkspaceSpec, client_public: str, host_key: tuple[str, str]
    ) -> Identity:
        user = config.defaults.user
        return cls(
            name=spec.name,
            type=spec.type,
            ip=str(spec.ip),
            prefixlen=config.network.subnet.prefixlen,
            gateway=str(config.network.gateway),
            dns=config.network.dns,
            user=user,
            authorized_keys=(client_public, *user.authorized_keys),
            privilege=config.defaults.privilege,
            host_key_private=host_key[0],
            host_key_public=host_key[1],
        )

    @property
    def home(self) -> str:
        return f"/home/{self.user.name}"


def network_unit(identity: Identity) -> str:
    """systemd-networkd: a container matches its veth by name, ``eth0`` as a VM's NIC and
    Docker's are (``host0``: what nspawn names a veth of its own, the benchmarks' by-hand
    baseline), and takes the derived MAC; a VM matches its NIC by the MAC QEMU gives it."""
    mac = derive.mac(identity.name)
    if identity.type == "container":
        match = "[Match]\nName=eth0 host0\n\n[Link]\nMACAddress=" + mac + "\n"
    else:
        match = f"[Match]\nMACAddress={mac}\n"
    lines = [
        "[Network]",
        f"Address={identity.ip}/{identity.prefixlen}",
        f"Gateway={identity.gateway}",
        "LinkLocalAddressing=no",
        "IPv6AcceptRA=no",
    ]
    return match + "\n" + "\n".join(lines) + "\n"


# The lab DNS, when the workspace has one: resolved's own setting rather than networkd's
# per-link one, so a restored VM's agent gives it to resolved with a signal, without
# waking networkd (its reload cost ~1 s of the guest's CPU beside the first login, under
# TCG).
DNS_DROP_IN = "/etc/systemd/resolved.conf.d/60-wsfixture-dns.conf"


def dns_drop_in(identity: Identity) -> str:
    """resolved's DNS server (the gateway, where the lab DNS listens), for every domain."""
    return f"# wsfixture: the lab DNS\n[Resolve]\nDNS={identity.gateway}\nDomains=~.\n"


def doas_rule(user: str) -> str:
    """The doas rule of every workspace: its user, as root or anyone, without a password."""
    return f"permit nopass {user}"


ROOT_DOAS_RULE = "permit nopass root"  # a nested host.sudo("user") from a root Host


def doas_conf(image_own: str, user: str) -> str:
    """/etc/doas.conf: the image's own rules (a setup line's), then the workspace's: its
    user's, and root's (doas asks a rule of root too; root may become anyone anyway)."""
    ours = [doas_rule(user), ROOT_DOAS_RULE]
    kept = [line for line in image_own.splitlines() if line.strip() not in ours]
    return "".join(f"{line}\n" for line in [*kept, *ours])


def sudo_rule(user: str) -> str:
    """``privilege = "sudo"``: its user, as anyone, without a password (in sudoers.d,
    beside the image's own rules)."""
    return f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"


def render(identity: Identity) -> dict[str, File]:
    """The files of the shared base, by absolute path inside the workspace."""
    uid = identity.user.uid
    ssh_dir = f"{identity.home}/.ssh"
    files = {
        "/etc/hostname": File(identity.name + "\n"),
        "/etc/machine-id": File(derive.machine_id(identity.name) + "\n", 0o444),
        "/etc/hosts": File(
            "127.0.0.1 localhost\n"
            f"{derive.hosts_line(identity.name, identity.ip)}\n"
            "::1 localhost ip6-localhost ip6-loopback\n"
        ),
        "/etc/systemd/network/10-wsfixture.network": File(network_unit(identity)),
        "/etc/doas.conf": File(doas_conf("", identity.user.name), 0o400),
        "/etc/ssh/ssh_host_ed25519_key": File(identity.host_key_private, 0o600),
        "/etc/ssh/ssh_host_ed25519_key.pub": File(identity.host_key_public),
        f"{ssh_dir}/authorized_keys": File(
            "".join(f"{key}\n" for key in identity.authorized_keys), 0o600, uid, uid
        ),
    }
    if identity.dns:
        files[DNS_DROP_IN] = File(dns_drop_in(identity))
    if identity.privilege == "sudo":
        files["/etc/sudoers.d/wsfixture"] = File(sudo_rule(identity.user.name), 0o440)
    return files


def _entries(text: str) -> dict[str, list[str]]:
    """An account file's lines by name (passwd: name, x, uid, gid, ...; group: name, x, gid)."""
    return {f[0]: f for f in (line.split(":") for line in text.splitlines()) if len(f) >= 3}


def account_conflict(passwd: str, group: str, user: UserSpec) -> ConfigIssue | None:
    """Why ``user`` cannot be the workspace user of an image with these accounts: its
    name is the image's own user with other ids, or its uid (its gid) is another user's
    (group's) of the image, who it would silently become. None: it can (or it is there
    already, the same)."""
    users, groups, uid = _entries(passwd), _entries(group), str(user.uid)
    where, allowed = "defaults.user.uid", "a uid no account of the image has"
    if (own := users.get(user.name)) is not None:
        if own[2:4] == [uid, uid]:
            return None
        return ConfigIssue(where, f"differs from the image's own user {user.name!r} (uid "
                           f"{own[2]}, gid {own[3] if len(own) > 3 else '?'})", user.uid,
                           f"{own[2]}, the image's (with its own group)")  # fmt: skip
    if holder := next((name for name, f in users.items() if f[2] == uid), None):
        return ConfigIssue(where, f"is the image's user {holder!r}'s: the workspace user "
                           f"{user.name!r} would log in as {holder!r}, with its rights",
                           user.uid, f"{allowed}, or defaults.user.name = {holder!r}")  # fmt: skip
    if holder := next((name for name, f in groups.items() if f[2] == uid), None):
        return ConfigIssue(where, f"is the gid of the image's group {holder!r}: the workspace "
                           f"user {user.name!r} would be in it", user.uid, allowed)  # fmt: skip
    return None


def add_user(passwd: str, group: str, shadow: str, user: UserSpec) -> tuple[str, str, str]:
    """The three account files with ``user`` added (unchanged if it is already there, the
    same); ConfigError where it would take over another account (``account_conflict``)."""
    if (conflict := account_conflict(passwd, group, user)) is not None:
        raise ConfigError([conflict])
    if user.name in _entries(passwd):
        return passwd, group, shadow
    name, uid = user.name, user.uid
    # "*" (not "!"): no password can match, yet the account is not "locked" for key logins.
    return (
        passwd + f"{name}:x:{uid}:{uid}::/home/{name}:/bin/bash\n",
        group + f"{name}:x:{uid}:\n",
        shadow + f"{name}:*:19000:0:99999:7:::\n",
    )


def write(root: Path, identity: Identity, uid_offset: int = 0) -> None:
    """Write the shared base into ``root`` (a workspace's own layer); owners are shifted by
    ``uid_offset``: a container's uids live at an offset on the host (its user namespace).
    Every path is resolved inside ``root`` (``host.inroot``): the image's links cannot lead
    these writes onto the host."""
    names = ("/etc/passwd", "/etc/group", "/etc/shadow")
    passwd, group, shadow = (inroot.read_text(root, name) for name in names)
    texts = add_user(passwd, group, shadow, identity.user)
    for name, text, mode in zip(names, texts, (0o644, 0o644, 0o640), strict=True):
        was = inroot.stat(root, name)  # each keeps its owner (shadow: group shadow)
        inroot.write(root, name, text.encode(), mode, was.st_uid, was.st_gid)
    uid = identity.user.uid + uid_offset
    for directory in (identity.home, f"{identity.home}/.ssh"):
        inroot.make_dir(root, directory, 0o700, uid, uid, parents_owner=uid_offset)
    files = render(identity)
    try:
        image_own = inroot.read_text(root, "/etc/doas.conf")
    except FileNotFoundError:
        image_own = ""
    files["/etc/doas.conf"] = dataclasses.replace(
        files["/etc/doas.conf"], content=doas_conf(image_own, identity.user.name)
    )
    for path, file in files.items():
        inroot.write(
            root, path, file.content.encode(), file.mode, file.uid + uid_offset,
            file.gid + uid_offset, parents_owner=uid_offset,  # made by root, as the image's own
        )  # fmt: skip
