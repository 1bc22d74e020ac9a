# Stand-in for nixpkgs' nixos/modules/profiles/base.nix: the minimal installer's packages.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
}
