# A minimal stand-in for nixpkgs' lib: enough to evaluate the module's option declarations
# and its assertions without nixpkgs (no binary cache here). Option constructors return
# their arguments as plain data; nothing of the module's realisation is evaluated.
let
  tag = kind: value: { _type = kind; inherit value; };
in
{
  mkOption = args: args // { _type = "option"; };
  mkEnableOption = description: { _type = "option"; default = false; inherit description; };
  mkIf = condition: value: if condition then value else { };
  mkForce = value: value;
  types = {
    str = tag "str" null;
    bool = tag "bool" null;
    int = tag "int" null;
    deferredModule = tag "module" null;
    enum = tag "enum";
    nullOr = tag "nullOr";
    listOf = tag "listOf";
    attrsOf = tag "attrsOf";
    submodule = tag "submodule";
    either = a: b: tag "either" [ a b ];
    ints = { between = low: high: tag "between" [ low high ]; positive = tag "positive" null; };
  };
  mapAttrs = builtins.mapAttrs;
  toInt = builtins.fromJSON;
  last = list: builtins.elemAt list (builtins.length list - 1);
  splitString = sep: s: builtins.filter builtins.isString (builtins.split sep s);
}
