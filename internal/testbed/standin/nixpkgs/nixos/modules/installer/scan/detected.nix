# Stand-in for nixpkgs' nixos/modules/installer/scan/detected.nix: devices nixos-generate-config detects.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
}
