# expect: region: "Ohio" is not an AWS region name
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "nixos-sd" "rpi" {
  region = "Ohio"
}

build {
  sources = ["source.nixos-sd.rpi"]
}
