# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-powerpc64le.nix: nixpkgs' POWER (petitboot) SD card image.
# Its imports are real (nixpkgs-module-tree.txt), and the settings the
# stand-in evaluation can hold, as the real file sets them (the root
# population commands are left out).
{ lib, ... }:
{
  imports = [
    ../../profiles/base.nix
    ../../profiles/installation-device.nix
    ./sd-image.nix
  ];
  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  boot.consoleLogLevel = lib.mkDefault 7;
  boot.kernelParams = [ "console=hvc0" ];
  sdImage.populateFirmwareCommands = "";
}
