# Stand-in for nixpkgs' nixos/modules/profiles/all-hardware.nix: all hardware NixOS supports.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
  imports = [
    ../hardware/network/zydas-zd1211.nix
  ];
}
