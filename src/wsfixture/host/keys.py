"""SSH keys: the client key of a state root and each workspace's host key.

Keys are generated once and persisted, so a workspace keeps its host key fingerprint across
restarts and the pinned ``known_hosts`` entry stays true. Private keys are written 0600 in
0700 directories; nothing ever accepts an unknown host key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wsfixture.host import system

HOST_KEY_NAME = "ssh_host_ed25519_key"
CLIENT_KEY_NAME = "id_ed25519"


@dataclass(frozen=True)
class KeyPair:
    private: Path

    @property
    def public(self) -> Path:
        return self.private.with_name(self.private.name + ".pub")

    def public_line(self) -> str:
        """``ssh-ed25519 AAAA... comment``"""
        return self.public.read_text().strip()

    def public_key(self) -> str:
        """``ssh-ed25519 AAAA...`` without the comment: what known_hosts pins."""
        return " ".join(self.public_line().split()[:2])


def ensure_keypair(private: Path, comment: str) -> KeyPair:
    """Return the key pair at ``private``, generating it the first time only."""
    pair = KeyPair(private)
    if private.exists() and pair.public.exists():
        if private.stat().st_mode & 0o077:
            private.chmod(0o600)
        return pair
    system.private_dir(private.parent)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    # Write under a temporary name and rename, so a concurrent reader never sees half a key
    # and a crash never leaves a private key with loose permissions.
    tmp = private.with_name(f".{private.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    pub_tmp = tmp.with_name(tmp.name + ".pub")
    pub_tmp.write_text(f"{public.decode()} {comment}\n")
    pub_tmp.replace(pair.public)
    tmp.replace(private)
    return pair


def client_key(state_root: Path) -> KeyPair:
    """The key wsfixture logs in with, one per state root."""
    return ensure_keypair(client_key_dir(state_root) / CLIENT_KEY_NAME, "wsfixture-client")


def client_key_dir(state_root: Path) -> Path:
    """Where a state root keeps the client key its labs log in with."""
    return state_root / ".wsfixture"


def host_key(host_key_dir: Path, name: str) -> KeyPair:
    """A workspace's persisted SSH host key (the seed's ``ssh-host-keys`` directory)."""
    return ensure_keypair(host_key_dir / HOST_KEY_NAME, f"root@{name}")
