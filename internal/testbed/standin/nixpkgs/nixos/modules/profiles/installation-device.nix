# Stand-in for nixpkgs' nixos/modules/profiles/installation-device.nix: the installation device profile.
# Only its imports are real (nixpkgs-module-tree.txt).
{ ... }:
{
  imports = [
    ../installer/scan/detected.nix
    ../installer/scan/not-detected.nix
    ./clone-config.nix
    ../installer/cd-dvd/channel.nix
  ];
}
