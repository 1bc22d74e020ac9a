# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-armv7l-multiplatform.nix: nixpkgs' ARMv7 SD card image (U-Boot for the Pi 2 and 3, Tegra, i.MX6, ...).
# Its imports are real (nixpkgs-module-tree.txt), and the settings the
# stand-in evaluation can hold, as the real file sets them; the kernel
# (pkgs.linuxPackages_latest there) is named, the stand-in having no
# package set, and the firmware commands are left out.
{ lib, ... }:
{
  imports = [
    ../../profiles/base.nix
    ./sd-image.nix
  ];
  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  boot.consoleLogLevel = lib.mkDefault 7;
  boot.kernelPackages = "linux_latest";
  boot.kernelParams = [
    "console=ttyS0,115200n8"
    "console=ttymxc0,115200n8"
    "console=ttyAMA0,115200n8"
    "console=ttyO0,115200n8"
    "console=ttySAC2,115200n8"
    "console=tty0"
  ];
}
