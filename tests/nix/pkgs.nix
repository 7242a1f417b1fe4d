# The minimum of nixpkgs' `pkgs` that evaluating nix/module.nix and nixos-tests/ needs
# without nixpkgs: a store path per package (never built), and stand-ins for what the NixOS
# tests call: runNixOSTest returns the test's arguments, runCommand a directory here.
{ lib, packages ? [ ] }:
let
  stub = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
in
lib.genAttrs ([ "openssh" "nix" ] ++ packages) stub // {
  inherit lib;
  system = "x86_64-linux";
  path = "/nonexistent/nixpkgs"; # microvm.nix's default for a VM's nixpkgs; never read here
  python3.withPackages = _: stub "python3-env";
  # A build's output is read at evaluation (the test's client key): ./stub-outputs/<name>.
  runCommand = name: _env: _script: stub name // { outPath = toString ./stub-outputs + "/${name}"; };
  testers.runNixOSTest = test: test;
}
