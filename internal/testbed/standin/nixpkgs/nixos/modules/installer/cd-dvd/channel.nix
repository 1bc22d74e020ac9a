# Stand-in for nixpkgs' nixos/modules/installer/cd-dvd/channel.nix: the installer's copy of the NixOS channel.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
}
