# expect: debian_release: 12 (bookworm) installs Nix 2.8.0, older than nixpkgs "nixos-26.05" needs (Nix >= 2.18
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "nixos-sd" "rpi" {
  region         = "us-east-2"
  debian_release = "bookworm"
}

build {
  sources = ["source.nixos-sd.rpi"]
}
