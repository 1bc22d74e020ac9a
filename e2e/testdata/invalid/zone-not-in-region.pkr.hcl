# expect: availability_zone: "eu-west-1a" is not in region "us-east-2"
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "nixos-sd" "rpi" {
  region            = "us-east-2"
  availability_zone = "eu-west-1a"
}

build {
  sources = ["source.nixos-sd.rpi"]
}
