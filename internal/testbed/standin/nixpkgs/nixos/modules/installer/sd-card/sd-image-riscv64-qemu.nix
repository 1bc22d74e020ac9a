# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-riscv64-qemu.nix: nixpkgs' RISC-V 64 SD card image for QEMU's virt machine.
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
  boot.loader.generic-extlinux-compatible.useGenerationDeviceTree = false;
  boot.consoleLogLevel = lib.mkDefault 7;
  boot.kernelParams = [
    "console=tty0"
    "console=ttyS0,115200n8"
  ];
  sdImage.populateFirmwareCommands = "";
}
