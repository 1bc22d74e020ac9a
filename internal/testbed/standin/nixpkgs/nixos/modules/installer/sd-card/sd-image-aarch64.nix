# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-aarch64.nix: nixpkgs' AArch64 SD card image.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
  imports = [
    ../../profiles/base.nix
    ./sd-image.nix
  ];
}
