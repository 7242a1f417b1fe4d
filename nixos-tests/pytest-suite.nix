# wsfixture installed into a NixOS VM, running its own pure test suite there.
{ pkgs, self }:
let
  wsfixture = self.packages.${pkgs.system}.wsfixture;
  python = pkgs.python3.withPackages (ps: [ wsfixture ps.hypothesis ps.pytest ]);
in
pkgs.testers.runNixOSTest {
  name = "wsfixture-pytest-suite";
  nodes.machine = { ... }: {
    environment.systemPackages = [ python pkgs.nix ];
  };
  testScript = ''
    machine.wait_for_unit("multi-user.target")
    machine.succeed("cp -r ${../.} /tmp/src && chmod -R u+w /tmp/src")
    machine.succeed("cd /tmp/src && ${python}/bin/python -m pytest -p no:cacheprovider tests/unit -q")
    machine.succeed("${python}/bin/wsfixture plan /tmp/src/examples/workspaces.toml")
  '';
}
