# nix/module.nix evaluated by nixpkgs' real module system (lib.evalModules), with microvm.nix's
# real option declarations and ./nixpkgs-options.nix for the NixOS options it sets. tests/nix
# calls it with the two inputs' paths and a configuration (JSON), and compares what comes
# out with what the Python side derives.
#
# What stands in for nixpkgs beyond lib (`pkgs`): store paths for the packages the config
# names and for openssh (never built), and pkgs.path (microvm.nix's default for a VM's
# nixpkgs, never read). A VM's and a container's own NixOS configuration go through
# nixpkgs' eval-config.nix on a real host; here each is evaluated with evalModules against
# the same declarations (and microvm.nix's guest options for a VM).
{ nixpkgsLib, microvm, configJson ? "{}", packages ? [ ], modules ? null }:
let
  lib = import (nixpkgsLib + "/lib"); # a path, not a string: nothing is copied to the store
  pkgs = import ./pkgs.nix { inherit lib packages; };
  hostOptions = microvm + "/nixos-modules/host/options.nix";
  guestOptions = microvm + "/nixos-modules/microvm/options.nix";

  evalNixos = modules: lib.evalModules {
    modules = [ ./nixpkgs-options.nix ] ++ modules;
    specialArgs = { inherit pkgs; };
  };

  # The module with a configuration, or (`modules`) a NixOS test's node that imports it.
  host = evalNixos (if modules != null then modules else [
    ../../nix/module.nix
    hostOptions
    { sandboxed-workspace = builtins.fromJSON configJson; }
  ]);
  cfg = host.config;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);

  # What the module defines for each VM: its own NixOS module is under `config`.
  vmDefinitions = lib.foldl' (a: b: a // b) { } host.options.microvm.vms.definitions;
  vmGuest = name: (evalNixos [ guestOptions vmDefinitions.${name}.config ]).config;
  containerGuest = name: (evalNixos [ cfg.containers.${name}.config ]).config;

  # The settings every workspace's own system gets (nix/module.nix's sharedBase), forced.
  baseOf = g: {
    hostName = g.networking.hostName;
    network = { inherit (g.systemd.network.networks."10-wsfixture") matchConfig address gateway dns networkConfig; };
    users = lib.mapAttrs (_: u: { inherit (u) isNormalUser uid; keys = u.openssh.authorizedKeys.keys; }) g.users.users;
    doas = map (r: { inherit (r) users noPass; }) g.security.doas.extraRules;
    sudo = if g.security.sudo.enable then map (r: { inherit (r) users; commands = map (c: { inherit (c) command options; }) r.commands; }) g.security.sudo.extraRules else null;
    sshd = { inherit (g.services.openssh) enable hostKeys; inherit (g.services.openssh.settings) PasswordAuthentication KbdInteractiveAuthentication PermitRootLogin; };
    packages = map (p: p.name) g.environment.systemPackages;
  };
in
{
  inherit lib host failedAssertions;
  # Every option value forced (so each type is checked), then the failed assertions.
  checked =
    let
      settings = cfg.sandboxed-workspace;
      plain = settings // { workspaces = lib.mapAttrs (_: ws: removeAttrs ws [ "config" ]) settings.workspaces; };
      modules = lib.mapAttrsToList (_: ws: builtins.attrNames ws.config) settings.workspaces;
    in builtins.deepSeq plain (builtins.deepSeq modules failedAssertions);
  containers = lib.mapAttrs (name: c: {
    inherit (c) autoStart restartIfChanged privateNetwork hostBridge;
    bindMounts = lib.mapAttrs (_: b: { inherit (b) mountPoint hostPath isReadOnly; }) c.bindMounts;
    base = baseOf (containerGuest name);
  }) cfg.containers;
  vms = lib.mapAttrs (name: v:
    let g = vmGuest name; in {
      inherit (v) autostart restartIfChanged;
      microvm = {
        inherit (g.microvm) hypervisor vcpu mem writableStoreOverlay;
        interfaces = map (i: { inherit (i) type id mac; }) g.microvm.interfaces;
        shares = map (s: { inherit (s) proto tag source mountPoint; }) g.microvm.shares;
        volumes = map (v: { inherit (v) image mountPoint size; }) g.microvm.volumes;
        vsockCid = g.microvm.vsock.cid;
      };
      base = baseOf g;
    }) cfg.microvm.vms;
  autostart = cfg.microvm.autostart;
  shellAliases = cfg.environment.shellAliases;
  extraHosts = cfg.networking.extraHosts;
  bridge = { inherit (cfg.networking) bridges; addresses = lib.mapAttrs (_: i: i.ipv4.addresses) cfg.networking.interfaces; };
  keyServices = lib.mapAttrs (_: s: { inherit (s) wantedBy before; }) cfg.systemd.services;
  # The units' resource properties: a container's bounds, a VM's TasksMax.
  limits = lib.mapAttrs (_: s: s.serviceConfig)
    (lib.filterAttrs (n: _: lib.hasPrefix "container@" n || lib.hasPrefix "microvm@" n) cfg.systemd.services);
}
