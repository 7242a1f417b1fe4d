"""A testinfra suite written for a Docker container, where the login is root: it reads root's
files without asking, and uses ``host.sudo(user)`` to act as another user. Nothing in it
knows wsfixture; on workspaces (whose root login is refused) it runs unchanged with
testinfra's own ``--sudo``:

    pytest --ws-config examples/workspaces.toml --ws-hosts myproject --sudo \
        examples/testinfra/root_login
"""


def test_the_login_is_root(host):
    assert host.user().name == "root"
    assert host.check_output("id -u") == "0"


def test_root_reads_its_own_files(host):
    shadow = host.file("/etc/shadow")
    assert shadow.user == "root"
    assert "root:" in shadow.content_string


def test_root_manages_packages_and_services(host):
    assert host.package("openssh-server").is_installed
    assert host.service("ssh").is_running
    assert host.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded")


def test_another_user_through_sudo(host):
    with host.sudo("nobody"):
        assert host.check_output("id -un") == "nobody"
        assert host.run("cat /etc/shadow").rc != 0
