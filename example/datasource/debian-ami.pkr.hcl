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

data "nixos-sd-debian-ami" "bookworm" {
  region       = var.region
  release      = "bookworm"
  architecture = "arm64"
}

source "nixos-sd" "rpi" {
  region     = var.region
  source_ami = data.nixos-sd-debian-ami.bookworm.id
}

build {
  sources = ["source.nixos-sd.rpi"]
}
