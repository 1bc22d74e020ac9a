# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-aarch64-new-kernel-no-zfs-installer.nix: its installer without ZFS.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
  imports = [
    ./sd-image-aarch64-new-kernel-installer.nix
  ];
}
