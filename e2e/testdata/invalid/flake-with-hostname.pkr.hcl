# expect: hostname: "kitchen" is set with flake; a flake is built as written
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "nixos-sd" "rpi" {
  region   = "us-east-2"
  flake    = "github:me/nixos-pi#rpi4"
  hostname = "kitchen"
}

build {
  sources = ["source.nixos-sd.rpi"]
}
