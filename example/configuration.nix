# A small NixOS configuration for a Raspberry Pi 3 or 4, built into an SD image.
# The plugin adds nixpkgs' sd-image-aarch64 module; this file adds what is yours.
{ pkgs, lib, ... }:
{
  networking.hostName = lib.mkDefault "rpi";

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };

  # Who may log in as root: nixos-sd.pkr.hcl sets use_local_ssh_keys = true,
  # so the plugin adds your own public keys (~/.ssh/*.pub and the SSH agent's)
  # through the module it adds, which the manifest shows. To fix the keys
  # here instead, list the contents of your ~/.ssh/id_*.pub:
  #   users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAAC3... you@laptop" ];

  environment.systemPackages = with pkgs; [ vim htop ];

  time.timeZone = "UTC";
  system.stateVersion = "26.05";
}
