# expect: release: unknown Debian release "sarge"
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

data "nixos-sd-debian-ami" "old" {
  region  = "us-east-2"
  release = "sarge"
}

source "nixos-sd" "rpi" {
  region     = "us-east-2"
  source_ami = data.nixos-sd-debian-ami.old.id
}

build {
  sources = ["source.nixos-sd.rpi"]
}
