# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-x86_64.nix: nixpkgs' x86_64 SD card image (its boot test's extlinux image).
# Its imports are real (nixpkgs-module-tree.txt), and the settings the
# stand-in evaluation can hold, as the real file sets them (the root
# population commands are left out).
{ lib, ... }:
{
  imports = [
    ../../profiles/base.nix
    ./sd-image.nix
  ];
  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  boot.consoleLogLevel = lib.mkDefault 7;
  sdImage.populateFirmwareCommands = "";
}
