# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-aarch64-new-kernel-installer.nix: its installer.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
  imports = [
    ../../profiles/installation-device.nix
    ./sd-image-aarch64-new-kernel.nix
  ];
}
