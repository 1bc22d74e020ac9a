# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-aarch64-installer.nix: nixpkgs' AArch64 SD card installer image.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
  imports = [
    ../../profiles/installation-device.nix
    ./sd-image-aarch64.nix
  ];
}
