# Entry point of a build with the user's own nixos_config: nixpkgs' AArch64
# SD card image module, the uploaded configuration (in ./config) and the
# plugin's module (./plugin.nix: the template's hostname and
# ssh_authorized_keys, or nothing). The plugin uploads this file as
# default.nix of the directory nixos-config names.
{ lib, ... }:

{
  imports = [
    <nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64.nix>
    ./config/configuration.nix
    ./plugin.nix
  ];

  # The image is for AArch64 boards whatever host evaluates it: never
  # builtins.currentSystem (a configuration of the user's may say it too).
  nixpkgs.hostPlatform = lib.mkDefault "aarch64-linux";
}
