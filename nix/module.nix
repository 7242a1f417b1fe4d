# NixOS module `sandboxed-workspace`: the seed's interface, realised with NixOS containers
# (systemd-nspawn) and microvm.nix VMs. Option names, defaults and checks are those of the
# Python config (src/wsfixture/config.py); identities come from ./derive.nix and the checks
# from ./validate.nix, so Nix and Python agree by construction.
#
# VMs need microvm.nix's host module imported as well (the flake's nixosModules.default does).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf types;
  cfg = config.sandboxed-workspace;
  derive = import ./derive.nix;
  validate = import ./validate.nix;

  prefixOf = subnet: lib.toInt (lib.last (lib.splitString "/" subnet));
  # The patterns and ranges of the Python validator (src/wsfixture/model/spec.py), so that a
  # value one side refuses the other refuses too, naming the same option.
  packageName = types.strMatching "[a-z0-9][a-z0-9+.-]+";
  namespaceName = types.strMatching "[a-z0-9][a-z0-9-]{0,30}";
  # "8G", "512MiB", "1t": a size as the Python side reads it, in MiB.
  sizeMatch = s: builtins.match "[[:space:]]*([0-9]+)[[:space:]]*(([KMGTkmgt])[iI]?[bB]?)?[[:space:]]*" s;
  sizeMiB = d:
    if builtins.isInt d then d
    else
      let
        m = sizeMatch d;
        unit = lib.toUpper (if builtins.elemAt m 2 == null then "M" else builtins.elemAt m 2);
        n = lib.toInt (builtins.elemAt m 0);
      in { K = n / 1024; M = n; G = n * 1024; T = n * 1048576; }.${unit};
  vcpuType = types.ints.between 1 256;
  # MiB as an integer, or a size as text, within [low, high] MiB.
  sizeBetween = low: high: let inRange = n: n >= low && n <= high; in types.either
    (types.addCheck types.int inRange)
    (types.addCheck types.str (s: sizeMatch s != null && inRange (sizeMiB s)));
  memoryType = sizeBetween 128 1048576;
  pidsType = types.ints.between 64 4194304;
  # What a VM gets when neither it nor the defaults say (the Python side's VM_RESOURCES).
  vmResources = { vcpu = 8; memory = 4096; disk = 8192; pids = 4096; };
  firstSet = values: lib.findFirst (v: v != null) null values;
  mapNullable = f: v: if v == null then null else f v;
  resourcesOf = ws: let kind = if ws.type == "vm" then vmResources else { }; in {
    vcpu = firstSet [ ws.vcpu cfg.defaults.vcpu (kind.vcpu or null) ];
    memory = mapNullable sizeMiB (firstSet [ ws.memory cfg.defaults.memory (kind.memory or null) ]);
    disk = mapNullable sizeMiB (firstSet [ ws.disk (kind.disk or null) ]);
    pids = firstSet [ ws.pids cfg.defaults.pids (kind.pids or null) ];
  };
  # A container's bounds as properties of its systemd unit (memory with no swap beyond it).
  containerLimits = ws: let r = resourcesOf ws; in
    lib.optionalAttrs (r.memory != null) { MemoryMax = "${toString r.memory}M"; MemorySwapMax = "0"; }
    // lib.optionalAttrs (r.vcpu != null) { CPUQuota = "${toString (r.vcpu * 100)}%"; }
    // lib.optionalAttrs (r.pids != null) { TasksMax = toString r.pids; };
  diskType = sizeBetween 256 16777216;
  user = cfg.defaults.user;
  stateDir = name: "${cfg.defaults.stateRoot}/${name}";
  home = "/home/${user.name}";

  workspaceModule = { name, ... }: {
    options = {
      # Required; null by default so a missing one is reported by our assertion, by name.
      type = mkOption {
        type = types.nullOr (types.enum [ "vm" "container" ]);
        default = null;
        description = "Required: a QEMU VM (microvm.nix) or a systemd-nspawn container.";
      };
      config = mkOption {
        type = types.deferredModule;
        default = { };
        description = "NixOS configuration of the workspace itself.";
      };
      ip = mkOption { type = types.nullOr types.str; default = null; description = "Required: static address on the bridge subnet."; };
      autoStart = mkOption { type = types.bool; default = false; };
      restartIfChanged = mkOption { type = types.bool; default = true; };
      packages = mkOption {
        type = types.listOf packageName;
        default = [ ];
        description = "Package names (nixpkgs attributes here, Debian names in wsfixture's own images).";
      };
      # null: the defaults' value, else the kind's (a VM's vmResources; a container: no limit).
      vcpu = mkOption { type = types.nullOr vcpuType; default = null; description = "VMs: virtual CPUs (8); containers: a CPU time bound (none)."; };
      memory = mkOption { type = types.nullOr memoryType; default = null; description = "MiB, or a size like \"2G\" (128 MiB to 1 TiB). VMs: 4096; containers: a bound, swap included (none)."; };
      disk = mkOption { type = types.nullOr diskType; default = null; description = "MiB, or a size like \"8G\" (256 MiB to 16 TiB). VMs: the store overlay's disk (8192); containers: wsfixture's bound on what it writes (not mapped here)."; };
      pids = mkOption { type = types.nullOr pidsType; default = null; description = "Processes and threads. VMs: 4096; containers: a bound (none)."; };
      shares = mkOption {
        default = [ ];
        type = types.listOf (types.submodule {
          options = {
            source = mkOption { type = types.strMatching "[/~].*"; };
            target = mkOption { type = types.strMatching "/.+"; };
            readOnly = mkOption { type = types.bool; default = false; };
          };
        });
      };
      accel = mkOption { type = types.enum [ "auto" "kvm" "tcg" ]; default = "auto"; };
      machine = mkOption { type = types.enum [ "q35" "microvm" ]; default = "q35"; };
      vsock = mkOption { type = types.enum [ "auto" "required" "off" ]; default = "auto"; };
      # Python-side only: how a test VM starts (restore a template or boot cold); a NixOS
      # host boots its microvm.nix VMs itself.
      snapshot = mkOption { type = types.nullOr (types.enum [ "auto" "off" ]); default = null; };
      docs = mkOption { type = types.nullOr types.bool; default = null; description = "Its image layer's packages with their docs (Debian images; default: the defaults')."; };
      # Python-side only: the Debian release of wsfixture's images; a NixOS workspace runs
      # the host's nixpkgs, whatever this says. Declared so that a shared config evaluates.
      release = mkOption { type = types.nullOr (types.enum [ "trixie" "bookworm" ]); default = null; };
      # wsfixture's Debian image layers; declared so that a config shared with the Python
      # side evaluates, and refused when set (an assertion says what to use instead).
      setup = mkOption { type = types.listOf types.str; default = [ ]; };
      files = mkOption { type = types.attrsOf types.str; default = { }; };
      internet = mkOption {
        type = types.nullOr (types.either types.bool (types.listOf types.str));
        default = null;
        description = "false keeps this workspace off the internet (its forwarding is dropped); a list (an allowlist) is wsfixture's, refused here.";
      };
      forwards = mkOption {
        type = types.attrsOf (types.ints.between 1 65535);
        default = { };
        description = "wsfixture CLI only: host port (on 127.0.0.1) -> workspace port.";
      };
      idleTimeout = mkOption {
        type = types.nullOr (types.either (types.ints.between 1 31622400) (types.strMatching "[[:space:]]*[0-9]+[[:space:]]*[smhd]?[[:space:]]*"));
        default = null;
        description = "wsfixture CLI only: `wsfixture up` stops the workspace after this long without an SSH session.";
      };
    };
  };

  # What every workspace gets, container or VM.
  sharedBase = name: ws: { ... }: {
    networking.hostName = name;
    networking.useNetworkd = true;
    networking.useHostResolvConf = lib.mkForce false;
    systemd.network.enable = true;
    systemd.network.networks."10-wsfixture" = {
      matchConfig = if ws.type == "vm" then { MACAddress = derive.mac name; } else { Name = "eth0"; };
      address = [ "${ws.ip}/${toString (prefixOf cfg.network.subnet)}" ];
      gateway = [ cfg.network.gateway ];
      dns = lib.optional cfg.network.dns cfg.network.gateway;
      networkConfig.LinkLocalAddressing = "no";
    };
    services.resolved = { enable = true; llmnr = "false"; extraConfig = "MulticastDNS=no\nResolveUnicastSingleLabel=yes\n"; };
    services.openssh = {
      enable = true;
      settings = { PasswordAuthentication = false; KbdInteractiveAuthentication = false; PermitRootLogin = "no"; };
      hostKeys = [{ path = "/etc/ssh/host-keys/ssh_host_ed25519_key"; type = "ed25519"; }];
    };
    users.users.${user.name} = {
      isNormalUser = true;
      uid = user.uid;
      openssh.authorizedKeys.keys = user.authorizedKeys;
    };
    security.doas = { enable = true; extraRules = [{ users = [ user.name ]; noPass = true; } { users = [ "root" ]; noPass = true; }]; };
    security.sudo = if cfg.defaults.privilege == "sudo" then {
      enable = true;
      extraRules = [{ users = [ user.name ]; commands = [{ command = "ALL"; options = [ "NOPASSWD" ]; }]; }];
    } else { enable = false; };
    environment.systemPackages = map (p: pkgs.${p}) (cfg.defaults.packages ++ ws.packages);
    services.journald.extraConfig = "Storage=volatile";
    system.stateVersion = config.system.stateVersion;
  };

  standardShares = name: [
    { tag = "workspace"; source = "${stateDir name}/workspace"; mountPoint = "${home}/workspace"; ro = false; }
    { tag = "claude-config"; source = "${stateDir name}/claude-config"; mountPoint = "${home}/.claude"; ro = false; }
    { tag = "ssh-host-keys"; source = "${stateDir name}/ssh-host-keys"; mountPoint = "/etc/ssh/host-keys"; ro = true; }
  ];
  sharesOf = name: ws: standardShares name
    ++ lib.imap0 (i: s: { tag = "share${toString i}"; inherit (s) source; mountPoint = s.target; ro = s.readOnly; }) ws.shares;

  containers = lib.filterAttrs (_: ws: ws.type == "container") cfg.workspaces;
  vms = lib.filterAttrs (_: ws: ws.type == "vm") cfg.workspaces;
  unitOf = name: ws: if ws.type == "vm" then "microvm@${name}.service" else "container@${name}.service";

  # `setup` and `files` build wsfixture's Debian images; a NixOS workspace says the same in
  # its own module (`config`: environment.etc, systemd services, activation scripts).
  # Allowlists are enforced in wsfixture's lab namespaces (net/egress.py); this module has
  # no such enforcement yet, and must not open the whole internet where a list was meant.
  allowlistsRefused = map (where: {
    assertion = false;
    message = "sandboxed-workspace: ${where}: is an allowlist, which wsfixture's labs enforce and this module does not yet; use true or false here";
  }) (lib.optionals (builtins.isList cfg.network.internet) [ "network.internet" ]
    ++ lib.concatLists (lib.mapAttrsToList (name: ws:
      lib.optionals (builtins.isList ws.internet) [ "workspaces.${name}.internet" ]) cfg.workspaces));
  imageOnly = lib.concatMap (where: [{
    assertion = false;
    message = "sandboxed-workspace: ${where}: is wsfixture's image setup, not NixOS's; put it in the workspace's `config` module (environment.etc, systemd services)";
  }]) (lib.optionals (cfg.defaults.setup != [ ]) [ "defaults.setup" ]
    ++ lib.optionals (cfg.defaults.files != { }) [ "defaults.files" ]
    ++ lib.concatLists (lib.mapAttrsToList (name: ws:
      lib.optionals (ws.setup != [ ]) [ "workspaces.${name}.setup" ]
      ++ lib.optionals (ws.files != { }) [ "workspaces.${name}.files" ]) cfg.workspaces));
in
{
  options.sandboxed-workspace = {
    enable = mkEnableOption "sandboxed workspaces (VMs and containers)";
    network = {
      subnet = mkOption { type = types.str; default = "192.168.83.0/24"; };
      gateway = mkOption { type = types.str; default = "192.168.83.1"; };
      rangeStart = mkOption { type = types.str; default = "192.168.83.10"; };
      rangeEnd = mkOption { type = types.str; default = "192.168.83.254"; };
      bridge = mkOption { type = types.strMatching "[A-Za-z0-9_.-]{1,15}"; default = "wsbr0"; };
      dns = mkOption { type = types.bool; default = true; };
      namespace = mkOption { type = namespaceName; default = "wsfixture"; description = "wsfixture CLI only."; };
      internet = mkOption {
        type = types.nullOr (types.either types.bool (types.listOf types.str));
        default = null;
        description = "NAT out of the bridge (the seed's); null means on, as for wsfixture up. A list (an allowlist) is wsfixture's, refused here.";
      };
      uplinkNamespace = mkOption { type = types.nullOr namespaceName; default = null; description = "wsfixture CLI only."; };
    };
    defaults = {
      user = {
        name = mkOption { type = types.addCheck (types.strMatching "[a-z_][a-z0-9_-]{0,31}") (n: n != "root"); default = "dev"; };
        uid = mkOption { type = types.ints.between 1000 60000; default = 1000; };
        authorizedKeys = mkOption { type = types.listOf (types.strMatching "(ssh-|ecdsa-|sk-)[^\n]*"); default = [ ]; };
      };
      packages = mkOption { type = types.listOf packageName; default = [ ]; };
      stateRoot = mkOption { type = types.str; default = "/home/${cfg.defaults.user.name}/sandboxed"; };
      snapshot = mkOption { type = types.enum [ "auto" "off" ]; default = "auto"; };
      release = mkOption { type = types.enum [ "trixie" "bookworm" ]; default = "trixie"; };
      setup = mkOption { type = types.listOf types.str; default = [ ]; };
      files = mkOption { type = types.attrsOf types.str; default = { }; };
      vcpu = mkOption { type = types.nullOr vcpuType; default = null; description = "Every workspace's vcpu unless it sets its own."; };
      memory = mkOption { type = types.nullOr memoryType; default = null; description = "Every workspace's memory unless it sets its own (MiB, or a size like \"2G\")."; };
      pids = mkOption { type = types.nullOr pidsType; default = null; description = "Every workspace's pids unless it sets its own."; };
      # wsfixture only: whether a workspace may ask for more memory than the host has free.
      overcommit = mkOption { type = types.bool; default = false; };
      # wsfixture's Debian images only: NixOS workspaces keep NixOS's documentation settings.
      docs = mkOption { type = types.bool; default = false; description = "Image layers' packages with their docs, man pages and locales (Debian images)."; };
      privilege = mkOption { type = types.enum [ "doas" "sudo" ]; default = "doas"; description = "What the user becomes root (or another user) with: doas, or sudo too (a NOPASSWD rule)."; };
    };
    workspaces = mkOption {
      type = types.attrsOf (types.submodule workspaceModule);
      default = { };
      description = "The workspaces, by name (the name becomes the hostname).";
    };
  };

  config = mkIf cfg.enable {
    assertions = imageOnly ++ allowlistsRefused ++ map
      (p: { assertion = false; message = "sandboxed-workspace: ${p.where}: ${p.problem}"; })
      (validate {
        network = cfg.network or { };
        user = cfg.defaults.user.name;
        workspaces = lib.mapAttrs (_: ws: {
          inherit (ws) type ip;
          targets = map (s: s.target) ws.shares;
          forwards = lib.attrNames ws.forwards;
        }) cfg.workspaces;
      });

    # The host bridge with the gateway address, and NAT out of it.
    networking.bridges.${cfg.network.bridge}.interfaces = [ ];
    networking.interfaces.${cfg.network.bridge}.ipv4.addresses = [{
      address = cfg.network.gateway;
      prefixLength = prefixOf cfg.network.subnet;
    }];
    networking.nat = { enable = cfg.network.internet != false; internalInterfaces = [ cfg.network.bridge ]; };
    networking.firewall.extraCommands = lib.concatMapStrings (ws: "iptables -I FORWARD -s ${ws.ip} -j DROP\n")
      (lib.attrValues (lib.filterAttrs (_: ws: ws.internet == false) cfg.workspaces));
    networking.extraHosts = lib.concatStringsSep "\n"
      (lib.mapAttrsToList (name: ws: derive.hostsLine name ws.ip) cfg.workspaces);
    services.dnsmasq = mkIf cfg.network.dns {
      enable = true;
      settings = { interface = cfg.network.bridge; bind-interfaces = true; no-resolv = false; };
    };

    environment.shellAliases = lib.foldl' (acc: a: acc // a) { } (lib.mapAttrsToList (name: ws:
      let
        names = derive.aliasNames name;
        unit = unitOf name ws;
      in {
        ${builtins.elemAt names 0} = "ssh ${user.name}@workspace-${name}";
        ${builtins.elemAt names 1} = "doas systemctl start ${unit}";
        ${builtins.elemAt names 2} = "doas systemctl stop ${unit}";
        ${builtins.elemAt names 3} = "doas systemctl restart ${unit}";
        ${builtins.elemAt names 4} = "systemctl status ${unit}";
      }) cfg.workspaces);

    # Host keys generated once and persisted in <stateRoot>/<name>/ssh-host-keys; the state
    # directories are created 0700 before the workspace starts, and never removed.
    systemd.services = lib.mapAttrs' (name: ws: lib.nameValuePair "container@${name}" {
      serviceConfig = containerLimits ws;
    }) (lib.filterAttrs (_: ws: containerLimits ws != { }) containers)
    // lib.mapAttrs' (name: ws: lib.nameValuePair "microvm@${name}" {
      serviceConfig.TasksMax = toString (resourcesOf ws).pids;
    }) vms
    // lib.mapAttrs' (name: ws: lib.nameValuePair "sandboxed-workspace-keys-${name}" {
      description = "wsfixture: state directories and persistent SSH host key of ${name}";
      wantedBy = [ (unitOf name ws) ];
      before = [ (unitOf name ws) ];
      serviceConfig.Type = "oneshot";
      script = ''
        install -d -m 0700 ${stateDir name}/ssh-host-keys
        install -d -m 0700 -o ${toString user.uid} -g ${toString user.uid} ${stateDir name}/workspace ${stateDir name}/claude-config
        key=${stateDir name}/ssh-host-keys/ssh_host_ed25519_key
        [ -f "$key" ] || ${pkgs.openssh}/bin/ssh-keygen -q -t ed25519 -N "" -C "root@${name}" -f "$key"
      '';
    }) cfg.workspaces;

    containers = lib.mapAttrs (name: ws: {
      autoStart = ws.autoStart;
      restartIfChanged = ws.restartIfChanged;
      privateNetwork = true;
      hostBridge = cfg.network.bridge;
      # The seed: containers share the host's /nix/store, read-only.
      bindMounts = lib.listToAttrs (map (s: lib.nameValuePair s.mountPoint { hostPath = s.source; isReadOnly = s.ro; }) (sharesOf name ws))
        // { "/nix/store" = { hostPath = "/nix/store"; isReadOnly = true; }; };
      config = { imports = [ ws.config (sharedBase name ws) ]; };
    }) containers;

    microvm.autostart = lib.attrNames (lib.filterAttrs (_: ws: ws.autoStart) vms);
    microvm.vms = lib.mapAttrs (name: ws: {
      autostart = ws.autoStart; # microvm.nix's own default is true
      restartIfChanged = ws.restartIfChanged;
      config = {
        imports = [ ws.config (sharedBase name ws) ];
        microvm = {
          hypervisor = "qemu";
          vcpu = (resourcesOf ws).vcpu;
          mem = (resourcesOf ws).memory;
          interfaces = [{ type = "tap"; id = derive.tapName name; mac = derive.mac name; }];
          # The seed: a VM's own /nix/store is an overlay, its writable part on a disk of
          # `disk` MiB (8 GB by default) over the host's store, shared read-only.
          shares = map (s: { proto = "virtiofs"; inherit (s) tag source mountPoint; }) (sharesOf name ws)
            ++ [{ proto = "virtiofs"; tag = "ro-store"; source = "/nix/store"; mountPoint = "/nix/.ro-store"; }];
          writableStoreOverlay = "/nix/.rw-store";
          volumes = [{ image = "nix-store-overlay.img"; mountPoint = "/nix/.rw-store"; size = (resourcesOf ws).disk; }];
          vsock.cid = derive.vsockCid name;
        };
      };
    }) vms;
    systemd.network.networks."11-wsfixture-taps" = mkIf (vms != { }) {
      matchConfig.Name = "wst-*";
      networkConfig.Bridge = cfg.network.bridge;
    };
  };
}
