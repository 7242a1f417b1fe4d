import stat
from pathlib import Path

import pytest

from wsfixture.errors import ConfigError
from wsfixture.guest import identity
from wsfixture.host import keys
from wsfixture.model.config import UserSpec, config_from_dict


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keypair_generated_once_with_private_modes(tmp_path: Path) -> None:
    first = keys.host_key(tmp_path / "hk", "alpha")
    assert mode(first.private) == 0o600
    assert mode(tmp_path / "hk") == 0o700
    assert first.public_key().startswith("ssh-ed25519 ")
    assert first.private.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    again = keys.host_key(tmp_path / "hk", "alpha")
    assert again.public_key() == first.public_key()


def test_loose_private_key_is_tightened(tmp_path: Path) -> None:
    pair = keys.client_key(tmp_path)
    pair.private.chmod(0o644)
    keys.client_key(tmp_path)
    assert mode(pair.private) == 0o600


def test_add_user_is_idempotent() -> None:
    user = UserSpec("dev", 1000)
    once = identity.add_user(
        "root:x:0:0::/root:/bin/bash\n", "root:x:0:\n", "root:*:1::::::\n", user
    )
    assert "dev:x:1000:1000::/home/dev:/bin/bash" in once[0]
    assert "dev:*:" in once[2]
    assert identity.add_user(*once, user) == once


@pytest.fixture
def alpha() -> identity.Identity:
    config = config_from_dict(
        {"workspaces": {"alpha": {"type": "container", "ip": "192.168.83.10"},
                        "beta": {"type": "vm", "ip": "192.168.83.11"}}}
    )  # fmt: skip
    return identity.Identity.of(
        config,
        config.workspaces["alpha"],
        "ssh-ed25519 AAAAclient c",
        ("PRIV", "ssh-ed25519 AAAAhost h"),
    )


def test_rendered_base(alpha: identity.Identity) -> None:
    files = identity.render(alpha)
    assert files["/etc/hostname"].content == "alpha\n"
    assert files["/etc/doas.conf"].content == "permit nopass dev\npermit nopass root\n"
    assert "/etc/sudoers.d/wsfixture" not in files  # privilege = "doas", the default
    assert files["/etc/ssh/ssh_host_ed25519_key"].mode == 0o600
    keys_file = files["/home/dev/.ssh/authorized_keys"]
    assert keys_file.content == "ssh-ed25519 AAAAclient c\n"
    assert (keys_file.mode, keys_file.uid) == (0o600, 1000)
    network = files["/etc/systemd/network/10-wsfixture.network"].content
    assert "Name=eth0 host0" in network
    assert "Address=192.168.83.10/24" in network
    assert "Gateway=192.168.83.1" in network
    assert "DNS=" not in network  # resolved's, not networkd's: see identity.DNS_DROP_IN
    dns = files[identity.DNS_DROP_IN].content
    assert "DNS=192.168.83.1\nDomains=~.\n" in dns


def test_no_dns_drop_in_without_dns(alpha: identity.Identity) -> None:
    from dataclasses import replace

    assert identity.DNS_DROP_IN not in identity.render(replace(alpha, dns=False))


def test_vm_network_matches_mac(alpha: identity.Identity) -> None:
    from dataclasses import replace

    from wsfixture.model import derive

    unit = identity.network_unit(replace(alpha, type="vm"))
    assert f"MACAddress={derive.mac('alpha')}" in unit.split("[Network]")[0]


PASSWD = "root:x:0:0::/root:/bin/bash\n"
GROUP = "root:x:0:\n"


@pytest.mark.parametrize(
    ("passwd", "group", "said"),
    [
        (PASSWD + "user:x:1000:1000::/home/user:/bin/sh\n", GROUP + "user:x:1000:\n",
         "is the image's user 'user''s: the workspace user 'dev' would log in as 'user'"),
        (PASSWD + "dev:x:1001:1001::/home/dev:/bin/sh\n", GROUP + "dev:x:1001:\n",
         "differs from the image's own user 'dev' (uid 1001, gid 1001)"),
        (PASSWD, GROUP + "docker:x:1000:\n",
         "is the gid of the image's group 'docker': the workspace user 'dev' would be in it"),
    ],
    ids=["uid-of-another-user", "own-name-other-uid", "gid-of-a-group"],
)  # fmt: skip
def test_the_workspace_user_never_silently_becomes_another_account(
    passwd: str, group: str, said: str
) -> None:
    """An image whose setup made an account with the workspace user's uid (``useradd -m
    user``): adding ``dev`` would make it log in as that user, with its rights. Refused,
    naming both and the field; a clean image is fine (the control)."""
    with pytest.raises(ConfigError, match=r"defaults\.user\.uid: ") as refused:
        identity.add_user(passwd, group, "", UserSpec("dev", 1000))
    assert said in str(refused.value)
    added = identity.add_user(PASSWD, GROUP, "", UserSpec("dev", 1000))  # a clean image
    assert "dev:x:1000:1000::/home/dev:/bin/bash\n" in added[0]
    # The image's own `dev` with the configured ids is the workspace user: kept as it is.
    same = PASSWD + "dev:x:1000:1000::/home/dev:/bin/sh\n"
    assert identity.add_user(same, GROUP + "dev:x:1000:\n", "", UserSpec("dev", 1000))[0] == same


def test_the_privilege_rules_keep_the_images_own(alpha: identity.Identity) -> None:
    """doas: the image's rules (a setup line's) then the workspace's, once; sudo: a rule of
    its own in sudoers.d, beside the image's."""
    own = "permit nopass nobody as root\npermit nopass dev\n"
    ours = "permit nopass dev\npermit nopass root\n"
    assert identity.doas_conf(own, "dev") == "permit nopass nobody as root\n" + ours
    assert identity.doas_conf("", "dev") == ours
    import dataclasses

    with_sudo = identity.render(dataclasses.replace(alpha, privilege="sudo"))
    rule = with_sudo["/etc/sudoers.d/wsfixture"]
    assert (rule.content, rule.mode) == ("dev ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440)
