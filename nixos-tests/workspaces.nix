# A host built from the module with one container and one VM workspace; the test script
# makes the checks of wsfixture.checks (the same commands) from the host and inside both.
{ pkgs, self }:
let
  derive = import ../nix/derive.nix;
  clientKey = pkgs.runCommand "wsfixture-test-key" { nativeBuildInputs = [ pkgs.openssh ]; } ''
    mkdir $out && ssh-keygen -q -t ed25519 -N "" -f $out/id_ed25519
  '';
in
pkgs.testers.runNixOSTest {
  name = "wsfixture-workspaces";
  nodes.host = { ... }: {
    imports = [ self.nixosModules.default ];
    virtualisation = { memorySize = 4096; cores = 2; };
    sandboxed-workspace = {
      enable = true;
      # ssh-keygen ends the line with a newline, which an authorized key may not contain.
      defaults.user.authorizedKeys = [ (pkgs.lib.removeSuffix "\n" (builtins.readFile "${clientKey}/id_ed25519.pub")) ];
      defaults.stateRoot = "/var/lib/sandboxed";
      workspaces.alpha = { type = "container"; ip = "192.168.83.10"; autoStart = true; };
      workspaces.beta = { type = "vm"; ip = "192.168.83.11"; autoStart = true; vcpu = 1; memory = 1024; };
    };
  };

  testScript = ''
    import shlex

    host.start()
    host.succeed("install -m 0600 ${clientKey}/id_ed25519 /root/id")

    def pin(name):
        key = host.succeed(f"cat /var/lib/sandboxed/{name}/ssh-host-keys/ssh_host_ed25519_key.pub")
        host.succeed(f"echo {shlex.quote('workspace-' + name + ' ' + ' '.join(key.split()[:2]))} >> /root/known_hosts")

    def ssh(name, command):
        return host.succeed(
            "ssh -i /root/id -o UserKnownHostsFile=/root/known_hosts -o StrictHostKeyChecking=yes "
            f"dev@workspace-{name} {shlex.quote(command)}"
        )

    host.wait_for_unit("container@alpha.service")
    host.wait_for_unit("microvm@beta.service", timeout=900)
    for name, ip in (("alpha", "192.168.83.10"), ("beta", "192.168.83.11")):
        host.wait_until_succeeds(f"ping -c 1 -W 2 {ip}", timeout=600)
        pin(name)
        host.wait_until_succeeds(f"ssh -i /root/id -o UserKnownHostsFile=/root/known_hosts -o StrictHostKeyChecking=yes dev@workspace-{name} true", timeout=600)
        assert f"{ip}/24" in ssh(name, "ip -o -4 addr show")
        assert "via 192.168.83.1" in ssh(name, "ip -4 route show default")
        assert ssh(name, "doas -n id -u").strip() == "0"
        assert ssh(name, "id -un").strip() == "dev"
        for unit in ("systemd-networkd", "systemd-resolved", "sshd"):
            assert ssh(name, f"systemctl is-active {unit}").strip() == "active"

    # Each resolves the other by name; the host has the entries and the aliases.
    assert ssh("alpha", "getent hosts workspace-beta").split()[0] == "192.168.83.11"
    assert ssh("beta", "getent hosts alpha").split()[0] == "192.168.83.10"
    host.succeed("grep -q '${derive.hostsLine "alpha" "192.168.83.10"}' /etc/hosts")
    host.succeed("bash -ic 'alias ${builtins.head (derive.aliasNames "beta")}'")

    # The persisted host key survives a restart: the pinned known_hosts still works.
    host.succeed("systemctl restart container@alpha.service")
    host.wait_until_succeeds("ssh -i /root/id -o UserKnownHostsFile=/root/known_hosts -o StrictHostKeyChecking=yes dev@workspace-alpha true", timeout=300)
  '';
}
