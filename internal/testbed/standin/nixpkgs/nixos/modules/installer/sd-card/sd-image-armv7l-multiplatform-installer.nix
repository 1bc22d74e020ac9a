# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-armv7l-multiplatform-installer.nix: its installer.
# Only its imports are real (nixpkgs-module-tree.txt); the real file sets nothing else.
{ ... }:
{
  imports = [
    ../../profiles/installation-device.nix
    ./sd-image-armv7l-multiplatform.nix
  ];
}
