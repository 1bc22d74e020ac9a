# expect: tags: "aws:owner" uses the reserved aws: prefix
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "nixos-sd" "rpi" {
  region = "us-east-2"
  tags = {
    "aws:owner" = "me"
  }
}

build {
  sources = ["source.nixos-sd.rpi"]
}
