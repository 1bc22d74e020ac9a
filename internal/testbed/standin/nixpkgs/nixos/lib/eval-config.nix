# The stand-in NixOS evaluation: it imports every module (a missing file, a
# syntax error or a module called without the arguments it needs fails as in
# nixpkgs), without typing options. The image derivation depends on the
# modules' files; the test bed realises it outside Nix.
{
  system ? builtins.currentSystem,
  modules ? [ ],
  specialArgs ? { },
  ...
}:
let
  pkgs = import ../.. { inherit system; };
  inherit (pkgs) lib;
  args = {
    inherit pkgs lib;
    config = { };
    options = { };
    modulesPath = toString ../modules;
  } // specialArgs;
  load =
    m:
    let
      file = if builtins.isPath m || builtins.isString m then m else null;
      v = if file != null then import file else m;
      r = if builtins.isFunction v then v args else v;
    in
    [ (if file != null then toString file else "<inline>") ] ++ builtins.concatMap load (r.imports or [ ]);
  loaded = builtins.concatMap load modules;
  sdImage = derivation {
    name = "nixos-image-sd-card-26.05.20260601.0000000-aarch64-linux.img";
    system = "aarch64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo the nixos-sd test bed realises this image outside Nix; exit 1" ];
    modules = builtins.toJSON loaded;
  };
in
# The image is built with pkgs, so evaluating it runs nixpkgs' version check.
builtins.seq pkgs.lib (builtins.seq (builtins.length loaded) {
  inherit pkgs;
  config.system.build = {
    inherit sdImage;
    toplevel = sdImage;
  };
})
