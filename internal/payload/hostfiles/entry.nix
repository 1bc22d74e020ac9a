# Entry point of a build with the user's own nixos_config: nixpkgs' AArch64
# SD card image module plus the uploaded configuration (in ./config). The
# plugin uploads this file as default.nix of the directory nixos-config names.
{ ... }:

{
  imports = [
    <nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64.nix>
    ./config/configuration.nix
  ];
}
