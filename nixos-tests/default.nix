# NixOS VM tests, run by `make nixos-test` (nix build .#checks.<system>.<name>).
{ pkgs, self }:
{
  workspaces = import ./workspaces.nix { inherit pkgs self; };
  pytest-suite = import ./pytest-suite.nix { inherit pkgs self; };
}
