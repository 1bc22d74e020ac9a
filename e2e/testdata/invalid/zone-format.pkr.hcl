# expect: availability_zone: "use2-az1" is not a zone name
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

# A zone id, not a zone name.
source "nixos-sd" "rpi" {
  region            = "us-east-2"
  availability_zone = "use2-az1"
}

build {
  sources = ["source.nixos-sd.rpi"]
}
