# expect: ssh_source_cidrs: "10.0.0.0/33" is not a CIDR block
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "nixos-sd" "rpi" {
  region           = "us-east-2"
  ssh_source_cidrs = ["10.0.0.0/33"]
}

build {
  sources = ["source.nixos-sd.rpi"]
}
