# expect: instance_types: "m5.large" is not an AArch64 (Graviton) type
# expect: "m7g.large"
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
  instance_types = ["c7g.2xlarge", "m5.large"]
}

build {
  sources = ["source.nixos-sd.rpi"]
}
