#!/usr/bin/env bash
# `make nixos-test`: the NixOS VM tests of nixos-tests/, built with Nix.
# They need Nix with flakes and a binary cache (they build NixOS systems); where Nix is
# absent this says so and fails, rather than pretending. Where ../shared/nix-inputs holds a
# local microvm.nix (a machine without network for Nix), the flake uses it
# (--override-input); nixpkgs-lib there is nixpkgs' lib alone, so nixpkgs comes from
# flake.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
nix=${WSFIXTURE_NIX:-nix}
if ! command -v "$nix" >/dev/null 2>&1; then
  echo "nixos-test: nix not found. The NixOS tests need Nix with flakes and access to a binary" >&2
  echo "cache (https://nixos.org/download). Run them on a NixOS or Nix machine: make nixos-test" >&2
  exit 1
fi
overrides=()
local_microvm=../shared/nix-inputs/microvm.nix
if [ -d "$local_microvm" ]; then
  overrides+=(--override-input microvm "path:$(cd "$local_microvm" && pwd)")
fi
system=$("$nix" eval --impure --raw --expr builtins.currentSystem)
for check in workspaces pytest-suite; do
  echo "== nix build .#checks.$system.$check"
  "$nix" build -L --extra-experimental-features 'nix-command flakes' "${overrides[@]}" \
    ".#checks.$system.$check"
done
