# A NixOS SD card image for a Raspberry Pi 5, through nixos-hardware's board
# profile. The plugin builds
# nixosConfigurations.rpi5.config.system.build.sdImage on the instance.
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    nixos-hardware.url = "github:NixOS/nixos-hardware";
  };

  outputs = { nixpkgs, nixos-hardware, ... }: {
    nixosConfigurations.rpi5 = nixpkgs.lib.nixosSystem {
      modules = [
        # The AArch64 SD card image: firmware partition, ext4 root, extlinux.
        "${nixpkgs}/nixos/modules/installer/sd-card/sd-image-aarch64.nix"
        # The Raspberry Pi 5: its kernel, device trees, config.txt and initrd modules.
        nixos-hardware.nixosModules.raspberry-pi-5
        ({ ... }: {
          nixpkgs.hostPlatform = "aarch64-linux";
          # The Pi 5's firmware chainloads U-Boot, which reads extlinux.conf
          # (nixos-hardware's raspberry-pi/README.md).
          hardware.raspberry-pi.firmware.uboot.enable = true;

          networking.hostName = "rpi5";
          services.openssh.enable = true;
          # Your own key: a flake cannot read ~/.ssh, so paste it here.
          users.users.root.openssh.authorizedKeys.keys = [
            # "ssh-ed25519 AAAA... you@laptop"
          ];
          system.stateVersion = "26.05";
        })
      ];
    };
  };
}
