# Stand-in for nixpkgs' nixos/modules/hardware/network/zydas-zd1211.nix: ZyDAS ZD1211 firmware.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
}
