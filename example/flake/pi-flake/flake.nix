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
        ({ lib, ... }: {
          nixpkgs.hostPlatform = "aarch64-linux";
          # The Pi 5's firmware chainloads U-Boot, which reads extlinux.conf
          # (nixos-hardware's raspberry-pi/README.md).
          hardware.raspberry-pi.firmware.uboot.enable = true;
          # sd-image-aarch64.nix imports sd-image.nix, which imports
          # profiles/all-hardware.nix: hardware.enableAllHardware = true asks
          # the initrd for modules of every machine (ahci, dw-hdmi, ...) that
          # nixos-hardware's Raspberry Pi kernel does not have, and the
          # initrd fails ("modprobe: FATAL: Module ahci not found"). The
          # Pi 5 profile lists the modules this board needs itself.
          hardware.enableAllHardware = lib.mkForce false;
          # The systemd initrd's TPM2 support adds tpm-crb, which that kernel
          # does not have either (nixos-hardware issue #2006).
          boot.initrd.systemd.tpm2.enable = false;
          # That kernel (linux-rpi, built by nixos-hardware's kernel.nix) is
          # not in the NixOS binary cache: the instance compiles it, which
          # takes most of the build. On the default c7g.2xlarge (8 vCPUs)
          # expect about 30 to 60 minutes (an estimate, not measured by this
          # project); build_timeout (2h by default) stops a longer build, and
          # a cache block keeps the kernel for the next build.

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
