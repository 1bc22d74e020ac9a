# Stand-in of nixos-hardware's raspberry-pi/5 module: the Pi 5's serial
# console and U-Boot option, as the real module declares them, and its
# kernel (linux-rpi, built from source), named here as the stand-in NixOS
# evaluation knows it.
{ lib, ... }:
{
  boot.kernelPackages = "linux-rpi";
  boot.kernelParams = [ "console=ttyAMA10,115200" ];
  hardware.raspberry-pi.firmware.uboot.enable = lib.mkDefault false;
}
