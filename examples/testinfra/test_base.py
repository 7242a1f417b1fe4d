"""A testinfra suite as one writes it for any Debian machine: it knows nothing of wsfixture.

Run it against workspaces of a config, each booted once for the session:

    pytest --ws-config examples/workspaces.toml --ws-hosts myproject examples/testinfra
"""


def test_sshd_is_installed_enabled_running_and_listening(host):
    assert host.package("openssh-server").is_installed
    sshd = host.service("ssh")
    assert sshd.is_enabled
    assert sshd.is_running
    assert host.socket("tcp://0.0.0.0:22").is_listening


def test_the_login_user_owns_a_home(host):
    user = host.user()
    assert user.name != "root"
    assert user.uid >= 1000
    home = host.file(user.home)
    assert home.is_directory
    assert home.user == user.name


def test_sudo_is_root_and_reads_what_only_root_may(host):
    assert host.run("cat /etc/shadow").rc != 0
    with host.sudo():
        assert host.check_output("id -u") == "0"
        assert "root:" in host.file("/etc/shadow").content_string


def test_the_system_is_debian_and_knows_its_own_name(host):
    assert host.system_info.distribution == "debian"
    name = host.check_output("hostname")
    assert host.file("/etc/hostname").content_string.strip() == name
    assert host.addr(name).is_resolvable
