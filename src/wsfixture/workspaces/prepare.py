"""What a boot needs, made before any machine starts: the state directories and their
shares, the persisted host key and the client key, the identity the guest gets, the image.
Nothing here starts a process; ``Workspace.launch`` records and boots."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wsfixture.errors import ConfigError
from wsfixture.guest import identity
from wsfixture.host import keys, share_acl, system
from wsfixture.image.build import Progress
from wsfixture.image.obtain import ensure_image
from wsfixture.image.recipe import Image, ImageRecipe
from wsfixture.model.config import Config, WorkspaceSpec
from wsfixture.model.shares import STANDARD_SHARES, WRITABLE_STANDARD_SHARES
from wsfixture.net.labfiles import LabHost


@dataclass(frozen=True)
class Prepared:
    """A workspace ready to boot: its identity, its keys, its image, what its lab learns."""

    identity: identity.Identity
    client: keys.KeyPair
    host_public_key: str  # "ssh-ed25519 AAAA..."
    image: Image
    lab_host: LabHost


def recipe_for(config: Config, spec: WorkspaceSpec) -> ImageRecipe:
    """The image recipe of a workspace: its kind, release, packages, setup and files."""
    got = config.resolve(spec)
    return ImageRecipe.for_packages(
        got.packages, spec.type, got.setup, got.files, got.release, got.docs
    )


def prepare_image(config: Config, spec: WorkspaceSpec, progress: Progress | None = None) -> Image:
    """The image the workspace boots from, built now if it is not cached."""
    sources = config.resolve(spec).files
    return ensure_image(recipe_for(config, spec), progress=progress, sources=sources)


def prepare(config: Config, spec: WorkspaceSpec, progress: Progress | None) -> Prepared:
    state_dir = config.state_dir(spec.name)
    # The state root and each workspace's dir hold keys: private, as the README promises.
    system.private_dir(config.state_root())
    system.private_dir(state_dir)
    shares = {name: state_dir / name for name in STANDARD_SHARES}
    for path in shares.values():
        system.private_dir(path)
    uid = config.defaults.user.uid
    for name in WRITABLE_STANDARD_SHARES:
        _chown_if_root_owned(shares[name], uid)
        share_acl.grant(shares[name], shares[name].stat().st_uid)
    host_key = keys.host_key(shares["ssh-host-keys"], spec.name)
    client = keys.client_key(config.state_root())
    made = identity.Identity.of(
        config, spec, client.public_line(),
        (host_key.private.read_text(), host_key.public.read_text()),
    )  # fmt: skip
    image = prepare_image(config, spec, progress)
    check_accounts(image, config)
    user = config.defaults.user.name
    lab_host = LabHost(spec.name, str(spec.ip), user, host_key.public_key())
    return Prepared(made, client, host_key.public_key(), image, lab_host)


def check_accounts(image: Image, config: Config) -> None:
    """ConfigError, before a machine starts, where the image has an account the workspace
    user would silently take over (a setup line's ``useradd``; ``identity.account_conflict``)."""
    passwd, group = image.read_text("etc/passwd"), image.read_text("etc/group")
    if (conflict := identity.account_conflict(passwd, group, config.defaults.user)) is not None:
        raise ConfigError([conflict], config.source)


def _chown_if_root_owned(path: Path, uid: int) -> None:
    """Give a fresh share to the workspace user; never touch one the user already owns."""
    if path.stat().st_uid == 0:
        os.chown(path, uid, uid)
