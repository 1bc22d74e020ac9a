# expect: nixos_config and flake: set one or the other
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
  nixos_config = "${path.root}/configuration.nix"
  flake        = "github:me/nixos-pi#rpi4"
}

build {
  sources = ["source.nixos-sd.rpi"]
}
