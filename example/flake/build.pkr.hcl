# Builds the Raspberry Pi 5 image of the flake in pi-flake/ (uploaded to the
# instance, with its flake.lock when there is one).
#
#   packer init .
#   packer build .
#
# The manifest next to the image records the nixpkgs revision flake.lock pins.

packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

variable "region" {
  type        = string
  default     = "" # the AWS configuration's region (AWS_REGION or the profile's)
  description = "The AWS region to build in."
}

source "nixos-sd" "rpi5" {
  region = var.region
  flake  = "${path.root}/pi-flake#rpi5"
}

build {
  sources = ["source.nixos-sd.rpi5"]
}
