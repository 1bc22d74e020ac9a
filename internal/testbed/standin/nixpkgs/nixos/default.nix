# <nixpkgs/nixos>, as nixpkgs' own: the configuration comes from
# <nixos-config> unless given.
{
  configuration ? import ./lib/from-env.nix "NIXOS_CONFIG" <nixos-config>,
  system ? builtins.currentSystem,
}:
let
  eval = import ./lib/eval-config.nix {
    inherit system;
    modules = [ configuration ];
  };
in
{
  inherit (eval) config pkgs;
  system = eval.config.system.build.toplevel;
}
