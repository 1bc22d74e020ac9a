# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-aarch64-new-kernel.nix: the AArch64 SD card image with linuxPackages_latest.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
  imports = [
    ./sd-image-aarch64.nix
  ];
}
