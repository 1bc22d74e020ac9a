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
  # Each module file (or inline module) with what it evaluates to, the
  # importing module first.
  load =
    m:
    let
      file = if builtins.isPath m || builtins.isString m then m else null;
      v = if file != null then import file else m;
      r = if builtins.isFunction v then v args else v;
    in
    [
      {
        name = if file != null then toString file else "<inline>";
        value = r;
      }
    ]
    ++ builtins.concatMap load (r.imports or [ ]);
  modulesLoaded = builtins.concatMap load modules;
  loaded = map (m: m.name) modulesLoaded;
  # nixpkgs.hostPlatform as NixOS reads it: the last module that sets it
  # (an import's plain value over its importer's lib.mkDefault), else the
  # evaluating machine's system.
  # nixpkgs.buildPlatform likewise, else the host platform.
  platformOf =
    name: default:
    let
      set = builtins.concatMap (
        m: if m.value ? nixpkgs && m.value.nixpkgs ? ${name} then [ m.value.nixpkgs.${name} ] else [ ]
      ) modulesLoaded;
      last = builtins.elemAt set (builtins.length set - 1);
    in
    if set == [ ] then
      default
    else if builtins.isAttrs last then
      last.system
    else
      last;
  hostPlatform = platformOf "hostPlatform" system;
  buildPlatform = platformOf "buildPlatform" hostPlatform;
  # A real build step for the test bed's binary cache: input-addressed, no
  # nixpkgs (the host's /bin/sh), a few seconds long. The stand-in nix builds
  # it with the real Nix when standin.conf says BUILD_INPUTS=1. Pure
  # evaluation (flakes) has no currentSystem.
  probe = derivation {
    name = "nixos-sd-testbed-probe";
    system = builtins.currentSystem or "x86_64-linux";
    builder = "/bin/sh";
    args = [
      "-c"
      "echo building the nixos-sd test bed probe; /bin/sleep 3; echo probe > $out"
    ];
  };
  sdImage = derivation {
    name = "nixos-image-sd-card-26.05.20260601.0000000-${hostPlatform}.img";
    system = hostPlatform;
    builder = "/bin/sh";
    args = [ "-c" "echo the nixos-sd test bed realises this image outside Nix; exit 1" ];
    modules = builtins.toJSON loaded;
    inherit probe;
  };
in
# The image is built with pkgs, so evaluating it runs nixpkgs' version check.
builtins.seq pkgs.lib (builtins.seq (builtins.length loaded) {
  # The package set NixOS builds with, as lib.nixosSystem's result carries
  # it: its stdenv's platforms are the configuration's.
  pkgs = pkgs // {
    stdenv = {
      hostPlatform.system = hostPlatform;
      buildPlatform.system = buildPlatform;
    };
  };
  config.nixpkgs.hostPlatform.system = hostPlatform;
  config.system.build = {
    inherit sdImage;
    toplevel = sdImage;
  };
})
