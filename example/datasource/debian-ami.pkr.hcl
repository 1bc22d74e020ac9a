# Looks up the newest official Debian arm64 AMI and builds on it.
#
#   packer build -var region=eu-west-1 example/datasource

packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-2"
}

# Debian 13 (trixie): its nix-bin (Nix 2.26) is new enough for current
# nixpkgs; Debian 12's (Nix 2.8) is not.
data "nixos-sd-debian-ami" "trixie" {
  region       = var.region
  release      = "trixie"
  architecture = "arm64"
}

source "nixos-sd" "rpi" {
  region     = var.region
  source_ami = data.nixos-sd-debian-ami.trixie.id
}

build {
  sources = ["source.nixos-sd.rpi"]
}
