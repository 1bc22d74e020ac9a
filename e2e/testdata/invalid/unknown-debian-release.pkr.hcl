# expect: debian_release: unknown Debian release "sarge"
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
  debian_release = "sarge"
}

build {
  sources = ["source.nixos-sd.rpi"]
}
