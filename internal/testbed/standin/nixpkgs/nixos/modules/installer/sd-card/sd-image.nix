# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image.nix: nixpkgs' SD card image builder (options sdImage.*).
# Only its imports are real (nixpkgs-module-tree.txt), and that it sets
# hardware.enableAllHardware = true, as the real one does.
{ ... }:
{
  imports = [
    ../../profiles/all-hardware.nix
    ../../image/file-options.nix
  ];
  hardware.enableAllHardware = true;
}
