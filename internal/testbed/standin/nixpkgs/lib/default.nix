# The few nixpkgs lib functions NixOS configurations commonly call, without
# the module system's priorities.
{
  mkDefault = x: x;
  mkForce = x: x;
  mkOverride = _: x: x;
  mkIf = _: x: x;
  mkMerge = xs: builtins.foldl' (a: b: a // b) { } xs;
  optional = c: x: if c then [ x ] else [ ];
  optionals = c: xs: if c then xs else [ ];
  version = "26.05";
}
