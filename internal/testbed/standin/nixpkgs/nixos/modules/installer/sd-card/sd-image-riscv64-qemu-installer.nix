# Stand-in for nixpkgs' nixos/modules/installer/sd-card/sd-image-riscv64-qemu-installer.nix: its installer.
# Its imports are real (nixpkgs-module-tree.txt), and it sets
# installer.cloneConfig = false, as the real one does.
{ ... }:
{
  imports = [
    ../../profiles/installation-device.nix
    ./sd-image-riscv64-qemu.nix
  ];
  installer.cloneConfig = false;
}
