# expect: flake: the local directory "./pi-flake" does not exist
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "nixos-sd" "rpi" {
  region = "us-east-2"
  flake  = "./pi-flake#rpi4"
}

build {
  sources = ["source.nixos-sd.rpi"]
}
