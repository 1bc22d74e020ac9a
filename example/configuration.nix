# A small NixOS configuration for a Raspberry Pi 3 or 4, built into an SD image.
# The plugin adds nixpkgs' sd-image-aarch64 module; this file adds what is yours.
{ pkgs, lib, ... }:
{
  networking.hostName = lib.mkDefault "rpi";

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };

  users.users.root.openssh.authorizedKeys.keys = [
    # Replace with your own public key (the contents of ~/.ssh/id_ed25519.pub).
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERreplaceWithYourOwnKeyXXXXXXXXXXXX you@example"
  ];

  environment.systemPackages = with pkgs; [ vim htop ];

  time.timeZone = "UTC";
  system.stateVersion = "26.05";
}
