# Stand-in for nixpkgs' nixos/modules/installer/scan/not-detected.nix: devices it does not detect.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
}
