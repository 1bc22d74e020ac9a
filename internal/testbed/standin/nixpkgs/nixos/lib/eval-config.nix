# The stand-in NixOS evaluation: it imports every module (a missing file, a
# syntax error or a module called without the arguments it needs fails as in
# nixpkgs), without typing options. The image derivation depends on the
# modules' files; the test bed realises it outside Nix.
#
# system is nixpkgs' legacy argument: builtins.currentSystem unless given,
# null from the flake's lib.nixosSystem, which then needs the configuration
# to set nixpkgs.hostPlatform (or the legacy nixpkgs.system).
{
  system ? builtins.currentSystem,
  modules ? [ ],
  specialArgs ? { },
  ...
}:
let
  pkgs = import ../.. { system = hostPlatform; };
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
  # A nixpkgs.* setting as NixOS reads it: the last module that sets it (an
  # import's plain value over its importer's lib.mkDefault), else null.
  setting =
    name:
    let
      set = builtins.concatMap (
        m: if m.value ? nixpkgs && m.value.nixpkgs ? ${name} then [ m.value.nixpkgs.${name} ] else [ ]
      ) modulesLoaded;
    in
    if set == [ ] then null else builtins.elemAt set (builtins.length set - 1);
  systemOf = p: if builtins.isAttrs p then p.system else p;
  # The legacy options: nixpkgs.localSystem, else nixpkgs.system, else the
  # system argument (its lib.mkDefault); nixpkgs.crossSystem for the host.
  legacySystem =
    if setting "localSystem" != null then
      systemOf (setting "localSystem")
    else if setting "system" != null then
      setting "system"
    else if system != null then
      system
    else
      # nixos/modules/misc/nixpkgs.nix's words.
      throw ''
        Neither nixpkgs.hostPlatform nor the legacy option nixpkgs.system has been set.
        You can set nixpkgs.hostPlatform in hardware-configuration.nix by re-running
        a recent version of nixos-generate-config.
        The option nixpkgs.system is still fully supported for NixOS 22.05 interoperability,
        but will be deprecated in the future, so we recommend to set nixpkgs.hostPlatform.
      '';
  # nixpkgs.hostPlatform, else the legacy options; nixpkgs.buildPlatform
  # likewise, else the host platform.
  hostPlatform =
    if setting "hostPlatform" != null then
      systemOf (setting "hostPlatform")
    else if setting "crossSystem" != null then
      systemOf (setting "crossSystem")
    else
      legacySystem;
  buildPlatform =
    if setting "buildPlatform" != null then
      systemOf (setting "buildPlatform")
    else if setting "hostPlatform" == null && setting "crossSystem" != null then
      legacySystem
    else
      hostPlatform;
  # Any other setting at a path, the last module's (default when none sets it).
  at =
    path: v:
    if path == [ ] then
      [ v ]
    else if builtins.isAttrs v && v ? ${builtins.head path} then
      at (builtins.tail path) v.${builtins.head path}
    else
      [ ];
  settingAt =
    path: default:
    let
      set = builtins.concatMap (m: at path m.value) modulesLoaded;
    in
    if set == [ ] then default else builtins.elemAt set (builtins.length set - 1);
  # The initrd modules the kernel does not have: with nixos-hardware's
  # Raspberry Pi kernel, those hardware.enableAllHardware (which sd-image.nix
  # sets) asks for. The stand-in realisation fails building the initrd then.
  initrdMissing =
    if settingAt [ "boot" "kernelPackages" ] null == "linux-rpi" && settingAt [ "hardware" "enableAllHardware" ] false then
      [ "ahci" ]
    else
      [ ];
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
  sdImage = derivation (
    {
      name = "nixos-image-sd-card-26.05.20260601.0000000-${hostPlatform}.img";
      system = hostPlatform;
      builder = "/bin/sh";
      args = [ "-c" "echo the nixos-sd test bed realises this image outside Nix; exit 1" ];
      modules = builtins.toJSON loaded;
      inherit probe;
    }
    // (if initrdMissing == [ ] then { } else { initrdMissingModules = toString initrdMissing; })
  );
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
