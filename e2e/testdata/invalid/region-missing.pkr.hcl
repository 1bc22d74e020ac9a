# expect: region: required
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "nixos-sd" "rpi" {
  hostname = "pi"
}

build {
  sources = ["source.nixos-sd.rpi"]
}
