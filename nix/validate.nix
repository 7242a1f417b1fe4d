# The config checks of the NixOS module, with builtins only, so they run without nixpkgs.
#
# Input: the `sandboxed-workspace` option values (or the same shape as plain data):
#   { network = { subnet; gateway; rangeStart; rangeEnd; };
#     user = <the workspace user's name>;
#     workspaces = { <name> = { type; ip; targets = [ share targets ]; forwards = [ host ports ]; }; }; }
# The checks of single values (types, patterns, ranges) are the options' types; these are
# the ones that look at several values, or that a type cannot name as Python does.
# Output: a list of problems, each { where; problem; }, where `where` is the same path the
# Python validator (wsfixture.model.config) names: "workspaces.<name>.ip", "workspaces.<name>.type".
# tests/nix compares the two on the same inputs.
let
  parseIp = s:
    let m = if builtins.isString s then builtins.match "([0-9]+)\\.([0-9]+)\\.([0-9]+)\\.([0-9]+)" s else null;
    in if m == null then null
      else let octets = map builtins.fromJSON m;
      in if builtins.any (o: o > 255) octets then null
        else builtins.foldl' (acc: o: acc * 256 + o) 0 octets;

  pow2 = n: builtins.foldl' (acc: _: acc * 2) 1 (builtins.genList (i: i) n);

  parseSubnet = s:
    let m = builtins.match "([0-9.]+)/([0-9]+)" s;
    in if m == null then null else {
      base = parseIp (builtins.elemAt m 0);
      prefix = builtins.fromJSON (builtins.elemAt m 1);
    };

  lib = { unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ]; };
  isPort = text: builtins.match "[0-9]+" text != null && builtins.fromJSON text >= 1 && builtins.fromJSON text <= 65535;

  hasPrefix = prefix: text: builtins.substring 0 (builtins.stringLength prefix) text == prefix;
  within = path: tree: path == tree || hasPrefix "${tree}/" path;
  # Guest trees a share may not cover (Python: SYSTEM_GUEST_PATHS, standard_share_targets).
  systemPaths = [ "/proc" "/sys" "/dev" "/run" "/etc/ssh/host-keys" ];
  standardShares = user: {
    workspace = "/home/${user}/workspace";
    "claude-config" = "/home/${user}/.claude";
    "ssh-host-keys" = "/etc/ssh/host-keys";
  };
  targetProblem = user: target:
    let
      system = builtins.filter (within target) systemPaths;
      standard = builtins.filter (tag: let t = (standardShares user).${tag}; in within target t || within t target)
        [ "workspace" "claude-config" "ssh-host-keys" ];
    in
    if builtins.match "(.*/)?\\.\\.(/.*)?" target != null then "has a '..' component"
    else if system != [ ] then "is a system path (${builtins.head system})"
    else if standard != [ ] then "covers the standard share ${builtins.head standard}"
    else null;

  nameOk = name: builtins.match "[a-z0-9]([a-z0-9-]*[a-z0-9])?" name != null
    && builtins.stringLength name <= 53;

  check = cfg:
    let
      network = cfg.network or { };
      subnetText = network.subnet or "192.168.83.0/24";
      subnet = parseSubnet subnetText;
      size = pow2 (32 - subnet.prefix);
      first = subnet.base;
      orDefault = key: offset:
        let v = network.${key} or null; in if v == null then first + offset else parseIp v;
      gateway = orDefault "gateway" 1;
      rangeStart = orDefault "rangeStart" 10;
      rangeEnd = orDefault "rangeEnd" (size - 2);
      # An address of the network section: given, an address, and a host of the subnet.
      addressProblems = key:
        let text = network.${key} or null; ip = parseIp text; in
        if text == null then [ ]
        else if ip == null then [{ where = "network.${key}"; problem = "is not an IPv4 address"; }]
        else if ip <= first || ip >= first + size - 1 then [{ where = "network.${key}"; problem = "is outside the subnet ${subnetText}"; }]
        else [ ];
      networkProblems =
        if subnet.prefix < 8 || subnet.prefix > 29 then [{ where = "network.subnet"; problem = "has an unusable prefix length"; }]
        else
          let addresses = builtins.concatMap addressProblems [ "gateway" "rangeStart" "rangeEnd" ]; in
          if addresses != [ ] then addresses
          else if rangeStart > rangeEnd then [{ where = "network.rangeStart"; problem = "is after rangeEnd"; }]
          else [ ];
      workspaces = cfg.workspaces or { };
      names = builtins.attrNames workspaces;

      problemsOf = name:
        let
          ws = workspaces.${name};
          type = ws.type or null;
          ipText = ws.ip or null;
          ip = parseIp ipText;
          at = field: "workspaces.${name}.${field}";
        in
        (if nameOk name then [ ] else [{ where = "workspaces.${name} name"; problem = "is not a valid workspace name"; }])
        ++ (if type == null then [{ where = at "type"; problem = "is required"; }]
            else if builtins.elem type [ "vm" "container" ] then [ ]
            else [{ where = at "type"; problem = "is not one of the choices"; }])
        ++ (if ipText == null then [{ where = at "ip"; problem = "is required"; }]
            else if ip == null then [{ where = at "ip"; problem = "is not an IPv4 address"; }]
            else if ip < first || ip >= first + size then [{ where = at "ip"; problem = "is outside the subnet ${subnetText}"; }]
            else if ip == gateway then [{ where = at "ip"; problem = "is the gateway's address"; }]
            else if ip < rangeStart || ip > rangeEnd then [{ where = at "ip"; problem = "is outside the usable range"; }]
            else [ ])
        ++ (let targets = ws.targets or [ ]; in
            if builtins.length targets == builtins.length (lib.unique targets) then [ ]
            else [{ where = at "shares"; problem = "mounts two shares at one target"; }])
        ++ builtins.concatLists (builtins.genList
            (i: let problem = targetProblem (cfg.user or "dev") (builtins.elemAt (ws.targets or [ ]) i); in
              if problem == null then [ ] else [{ where = at "shares[${toString i}].target"; inherit problem; }])
            (builtins.length (ws.targets or [ ])))
        ++ map (port: { where = at "forwards.${port}"; problem = "is not a port forward"; })
            (builtins.filter (port: !(isPort port)) (ws.forwards or [ ]));

      # Duplicates: every workspace after the first that takes an address.
      withIp = builtins.filter (n: parseIp (workspaces.${n}.ip or null) != null) names;
      duplicates = builtins.filter
        (n: builtins.any (m: m < n && workspaces.${m}.ip == workspaces.${n}.ip) withIp)
        withIp;
    in
    (if subnet == null || subnet.base == null then [{ where = "network.subnet"; problem = "is not an IPv4 network"; }]
     else if networkProblems != [ ] then networkProblems
     else builtins.concatMap problemsOf names
       ++ map (n: { where = "workspaces.${n}.ip"; problem = "is already used by another workspace"; }) duplicates);
in
check
