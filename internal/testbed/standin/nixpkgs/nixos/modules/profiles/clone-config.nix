# Stand-in for nixpkgs' nixos/modules/profiles/clone-config.nix: the installer's /etc/nixos/configuration.nix.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
}
