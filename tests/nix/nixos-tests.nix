# A NixOS test of nixos-tests/, evaluated as far as nixpkgs' lib and microvm.nix reach: the
# test's arguments (pkgs.testers.runNixOSTest returns them here), each node's configuration
# through ./eval.nix (the flake's nixosModules.default is microvm.nix's host options and
# nix/module.nix), and the test script, which tests/nix compiles with Python.
{ nixpkgsLib, microvm, test }:
let
  lib = import (nixpkgsLib + "/lib");
  pkgs = import ./pkgs.nix { inherit lib; };
  self = {
    nixosModules.default = { imports = [ (microvm + "/nixos-modules/host/options.nix") ../../nix/module.nix ]; };
    packages.${pkgs.system}.wsfixture = pkgs.nix // { name = "wsfixture"; };
  };
  args = import test { inherit pkgs self; };
  nodes = lib.mapAttrs (_: node: import ./eval.nix { inherit nixpkgsLib microvm; modules = [ node ]; }) args.nodes;
in
{
  inherit (args) name testScript;
  failedAssertions = lib.concatMap (n: n.failedAssertions) (lib.attrValues nodes);
} // lib.mapAttrs (_: n: { inherit (n) containers vms; }) nodes
