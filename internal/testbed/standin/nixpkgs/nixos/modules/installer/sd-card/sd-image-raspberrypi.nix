# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-raspberrypi.nix: nixpkgs' SD card image for the Raspberry Pi Zero and 1 (ARMv6).
# Its imports are real (nixpkgs-module-tree.txt), and the settings the
# stand-in evaluation can hold, as the real file sets them; the kernel
# (pkgs.linuxKernel.packages.linux_rpi1 there) is named, the stand-in having
# no package set, and the firmware commands are left out.
{ lib, ... }:
{
  imports = [
    ../../profiles/base.nix
    ./sd-image.nix
  ];
  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  boot.consoleLogLevel = lib.mkDefault 7;
  boot.kernelPackages = "linux_rpi1";
}
