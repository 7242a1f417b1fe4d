{
  description = "wsfixture: sandboxed workspaces (VMs and containers) and the pytest toolkit that checks them";

  # flake.lock pins both: microvm.nix at the revision of ../shared/nix-inputs (what tests/nix
  # evaluates the module against), nixpkgs at the revision that microvm.nix revision pins.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    microvm = {
      url = "github:microvm-nix/microvm.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, microvm }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # The module with microvm.nix's host side, which VM workspaces need.
      nixosModules.default = { imports = [ microvm.nixosModules.host ./nix/module.nix ]; };
      nixosModules.sandboxed-workspace = ./nix/module.nix;
      lib.derive = import ./nix/derive.nix;

      packages = forAll (pkgs: rec {
        wsfixture = pkgs.python3Packages.buildPythonPackage {
          pname = "wsfixture";
          version = "0.1.0";
          pyproject = true;
          src = ./.;
          build-system = [ pkgs.python3Packages.hatchling ];
          # pyproject.toml's dependencies, the same list (tests/unit/test_packaging.py).
          dependencies = with pkgs.python3Packages; [ pytest pytest-testinfra fabric paramiko filelock argcomplete ];
          nativeCheckInputs = with pkgs.python3Packages; [ pytestCheckHook hypothesis pytest-xdist ];
          # Only the pure tests here; the rest boots workspaces (root, nspawn, QEMU).
          pytestFlagsArray = [ "tests/unit" ];
        };
        default = wsfixture;
      });

      checks = forAll (pkgs: import ./nixos-tests { inherit pkgs self; });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.python3.withPackages (ps: with ps; [
              pytest pytest-xdist pytest-testinfra fabric paramiko filelock argcomplete hypothesis mypy
            ]))
            pkgs.ruff pkgs.mmdebstrap pkgs.qemu pkgs.dnsmasq pkgs.iproute2 pkgs.openssh
          ];
        };
      });
    };
}
