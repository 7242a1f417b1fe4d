# Deterministic identity of a workspace, with Nix builtins only (no nixpkgs lib), so both the
# NixOS module and a bare `nix-instantiate --eval` can use it.
#
# The same algorithm as src/wsfixture/derive.py; tests/nix holds the two together with
# shared vectors. Change one, change both.
#
# All values come from one digest: sha256 of "wsfixture/" + name, as lowercase hex.
#   MAC:        "02" (locally administered, unicast) + digest hex 0..10
#   vsock CID:  3 + int(hex 10..18) mod (2^32 - 4)      (0-2 reserved, 2^32-1 is "any")
#   interfaces: "wst-" (VM TAP) or "wsc-" (container veth, host side) + digest hex 0..8
let
  digest = name: builtins.hashString "sha256" ("wsfixture/" + name);

  hexValues = {
    "0" = 0; "1" = 1; "2" = 2; "3" = 3; "4" = 4; "5" = 5; "6" = 6; "7" = 7;
    "8" = 8; "9" = 9; "a" = 10; "b" = 11; "c" = 12; "d" = 13; "e" = 14; "f" = 15;
  };
  characters = s: builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s);
  hexToInt = s: builtins.foldl' (acc: c: acc * 16 + hexValues.${c}) 0 (characters s);
  mod = a: b: a - (a / b) * b;

  cidMin = 3;
  cidSpan = 4294967292; # 2^32 - 4

  mac = name:
    let d = digest name;
    in "02:" + builtins.concatStringsSep ":" (builtins.genList (i: builtins.substring (i * 2) 2 d) 5);

  vsockCid = name: cidMin + mod (hexToInt (builtins.substring 10 8 (digest name))) cidSpan;

  tapName = name: "wst-" + builtins.substring 0 8 (digest name);
  vethName = name: "wsc-" + builtins.substring 0 8 (digest name);
  interfaceNames = name: { tap = tapName name; veth = vethName name; };

  hostnames = name: [ name "workspace-${name}" ];
  hostsLine = name: ip: builtins.concatStringsSep " " ([ ip ] ++ hostnames name);
  aliasNames = name: map (suffix: "workspace_${name}${suffix}") [ "" "_start" "_stop" "_restart" "_status" ];

  identity = name: ip: {
    inherit name;
    mac = mac name;
    cid = vsockCid name;
    interfaces = interfaceNames name;
    hostnames = hostnames name;
    hostsLine = hostsLine name ip;
    aliases = aliasNames name;
  };
in
{
  inherit digest mac vsockCid tapName vethName interfaceNames hostnames hostsLine aliasNames identity;
}
