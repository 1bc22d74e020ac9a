# The nixos-sd plugin's built-in NixOS configuration: a generic AArch64 SD
# card image (boots Raspberry Pi 3 and 4) with SSH enabled. The plugin writes
# the host name and SSH keys into settings.json next to this file, in the
# directory nixos-config names.
{ ... }:

let
  settings = builtins.fromJSON (builtins.readFile ./settings.json);
  keys = settings.ssh_authorized_keys;
in
{
  imports = [
    <nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64.nix>
  ];

  # The image is for AArch64 boards whatever host evaluates it: never
  # builtins.currentSystem.
  nixpkgs.hostPlatform = "aarch64-linux";

  networking.hostName = settings.hostname;

  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };

  users.users.root.openssh.authorizedKeys.keys = keys;
  users.users.nixos = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    openssh.authorizedKeys.keys = keys;
  };
  security.sudo.wheelNeedsPassword = false;

  # The plugin downloads the compressed image and decompresses it locally.
  sdImage.compressImage = true;

  system.stateVersion = settings.state_version;
}
