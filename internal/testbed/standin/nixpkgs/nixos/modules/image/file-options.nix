# Stand-in for nixpkgs' nixos/modules/image/file-options.nix: image.baseName, image.fileName, ....
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
}
