# expect: nixos_config:
# expect: does not exist
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "nixos-sd" "rpi" {
  region       = "us-east-2"
  nixos_config = "${path.root}/no-such-configuration.nix"
}

build {
  sources = ["source.nixos-sd.rpi"]
}
