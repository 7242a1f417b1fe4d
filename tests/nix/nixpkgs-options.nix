# The NixOS options nix/module.nix sets, on the host and inside its workspaces, declared with
# the types of nixpkgs' own declarations (each with the nixpkgs file it mirrors), so that
# tests/nix evaluates the module with nixpkgs' real lib but without nixpkgs' nixos/modules
# (not available here). Only what the module sets is declared: a misspelled option is then
# an error ("does not exist"), as on a real NixOS host.
#
# Where nixpkgs' type evaluates a whole NixOS system (containers.<name>.config goes through
# nixos/lib/eval-config.nix), the option is a deferred module here, and tests/nix evaluates
# that module against these same declarations.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  # nixos/lib/systemd-lib.nix: unitNameType, and unitOption (an atom or a list of atoms).
  unitNameType = types.strMatching
    "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  unitAtom = types.oneOf [ types.bool types.int types.str types.path ];
  unitOption = types.either unitAtom (types.listOf unitAtom);
  lines = mkOption { type = types.lines; default = ""; };
  bool = default: mkOption { type = types.bool; inherit default; };
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };

    # nixos/modules/misc/version.nix
    system.stateVersion = mkOption { type = types.str; default = "26.05"; };

    # nixos/modules/virtualisation/nixos-containers.nix
    containers = mkOption {
      default = { };
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          config = mkOption { type = types.deferredModule; default = { }; };
          autoStart = bool false;
          restartIfChanged = bool true;
          privateNetwork = bool false;
          hostBridge = mkOption { type = types.nullOr types.str; default = null; };
          bindMounts = mkOption {
            default = { };
            type = types.attrsOf (types.submodule ({ name, ... }: {
              options = {
                mountPoint = mkOption { type = types.str; };
                hostPath = mkOption { type = types.nullOr types.str; default = null; };
                isReadOnly = bool true;
              };
              config.mountPoint = lib.mkDefault name;
            }));
          };
        };
      }));
    };

    networking = {
      # nixos/modules/tasks/network-interfaces.nix
      hostName = mkOption {
        type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
        default = "nixos";
      };
      useNetworkd = bool false;
      extraHosts = lines;
      bridges = mkOption {
        default = { };
        type = types.attrsOf (types.submodule {
          options = {
            interfaces = mkOption { type = types.listOf types.str; };
            rstp = bool false;
          };
        });
      };
      interfaces = mkOption {
        default = { };
        type = types.attrsOf (types.submodule {
          options.ipv4.addresses = mkOption {
            default = [ ];
            type = types.listOf (types.submodule {
              options = {
                address = mkOption { type = types.str; };
                prefixLength = mkOption { type = types.addCheck types.int (n: n >= 0 && n <= 32); };
              };
            });
          };
        });
      };
      # nixos/modules/virtualisation/nixos-containers.nix (inside a container)
      useHostResolvConf = bool false;
      # nixos/modules/services/networking/nat.nix
      nat = {
        enable = bool false;
        internalInterfaces = mkOption { type = types.listOf types.str; default = [ ]; };
      };
      # nixos/modules/services/networking/firewall.nix
      firewall.extraCommands = lines;
    };

    # nixos/modules/system/boot/networkd.nix
    systemd.network = {
      enable = bool false;
      networks = mkOption {
        default = { };
        type = types.attrsOf (types.submodule {
          options = {
            matchConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
            networkConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
            address = mkOption { type = types.listOf types.str; default = [ ]; };
            gateway = mkOption { type = types.listOf types.str; default = [ ]; };
            dns = mkOption { type = types.listOf types.str; default = [ ]; };
          };
        });
      };
    };
    # nixos/modules/system/boot/systemd.nix, nixos/lib/systemd-unit-options.nix
    systemd.services = mkOption {
      default = { };
      type = types.attrsOf (types.submodule {
        options = {
          description = mkOption { type = types.singleLineStr; default = ""; };
          wantedBy = mkOption { type = types.listOf unitNameType; default = [ ]; };
          before = mkOption { type = types.listOf unitNameType; default = [ ]; };
          serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
          script = lines;
        };
      });
    };

    services = {
      # nixos/modules/services/networking/dnsmasq.nix (settings: pkgs.formats.keyValue's type)
      dnsmasq = {
        enable = bool false;
        settings = mkOption {
          default = { };
          type = types.submodule {
            freeformType = let atom = types.nullOr (types.oneOf [ types.bool types.int types.float types.str types.path ]);
              in types.attrsOf (types.either atom (types.listOf atom));
          };
        };
      };
      # nixos/modules/system/boot/resolved.nix
      resolved = {
        enable = bool false;
        llmnr = mkOption { type = types.enum [ "true" "resolve" "false" ]; default = "true"; };
        extraConfig = lines;
      };
      # nixos/modules/services/networking/ssh/sshd.nix
      openssh = {
        enable = bool false;
        settings = mkOption {
          default = { };
          type = types.submodule {
            freeformType = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.int types.str (types.listOf types.str) ]));
            options = {
              PasswordAuthentication = bool true;
              KbdInteractiveAuthentication = bool true;
              PermitRootLogin = mkOption {
                type = types.enum [ "yes" "without-password" "prohibit-password" "forced-commands-only" "no" ];
                default = "prohibit-password";
              };
            };
          };
        };
        hostKeys = mkOption { type = types.listOf types.attrs; default = [ ]; };
      };
      # nixos/modules/system/boot/journald.nix
      journald.extraConfig = lines;
    };

    # nixos/modules/virtualisation/qemu-vm.nix (set by the NixOS test of nixos-tests/)
    virtualisation = {
      memorySize = mkOption { type = types.ints.positive; default = 1024; };
      cores = mkOption { type = types.ints.positive; default = 1; };
    };

    # nixos/modules/config/users-groups.nix
    users.users = mkOption {
      default = { };
      type = types.attrsOf (types.submodule {
        options = {
          isNormalUser = bool false;
          uid = mkOption { type = types.nullOr types.int; default = null; };
          openssh.authorizedKeys.keys = mkOption { type = types.listOf types.singleLineStr; default = [ ]; };
        };
      });
    };

    security = {
      # nixos/modules/security/doas.nix
      doas = {
        enable = bool false;
        extraRules = mkOption {
          default = [ ];
          type = types.listOf (types.submodule {
            options = {
              users = mkOption { type = types.listOf (types.either types.str types.int); default = [ ]; };
              noPass = mkOption { type = types.nullOr types.bool; default = null; };
            };
          });
        };
      };
      # nixos/modules/security/sudo.nix
      sudo = {
        enable = bool true;
        extraRules = mkOption {
          default = [ ];
          type = types.listOf (types.submodule {
            options = {
              users = mkOption { type = types.listOf (types.either types.str types.int); default = [ ]; };
              commands = mkOption {
                type = types.listOf (types.either types.str (types.submodule {
                  options = {
                    command = mkOption { type = types.str; };
                    options = mkOption { type = types.listOf (types.enum [ "NOPASSWD" "PASSWD" "NOEXEC" "EXEC" "SETENV" "NOSETENV" "LOG_INPUT" "NOLOG_INPUT" "LOG_OUTPUT" "NOLOG_OUTPUT" ]); default = [ ]; };
                  };
                }));
              };
            };
          });
        };
      };
    };

    environment = {
      # nixos/modules/config/shells-environment.nix
      shellAliases = mkOption { type = types.attrsOf (types.nullOr (types.either types.str types.path)); default = { }; };
      # nixos/modules/config/system-path.nix
      systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    };
  };
}
