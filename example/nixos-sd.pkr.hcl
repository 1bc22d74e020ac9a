# Builds a NixOS SD image for a Raspberry Pi 3/4 on a native AArch64 EC2 spot instance.
#
#   packer init .
#   packer build -var region=eu-west-1 .
#
# The image lands in output-rpi/ beside its .sha256 and a manifest.

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
  default     = "us-east-2"
  description = "The AWS region to build in."
}

variable "availability_zone" {
  type        = string
  default     = ""
  description = "An availability zone of the region, or empty to let EC2 pick any zone with spot capacity."
}

variable "ssh_host" {
  type        = string
  default     = ""
  description = "Connect here instead of the instance's public IP (a port forward; the local test bed uses it). Leave empty."
}

variable "public_ip_url" {
  type        = string
  default     = "https://checkip.amazonaws.com"
  description = "Where to ask for this machine's public address, which alone may reach the instance's SSH port."
}

source "nixos-sd" "rpi" {
  region            = var.region
  availability_zone = var.availability_zone
  nixos_config      = "${path.root}/configuration.nix"
  hostname          = "rpi"
  # Let your own public keys log in as root (configuration.nix holds none).
  use_local_ssh_keys = true

  ssh_host      = var.ssh_host
  public_ip_url = var.public_ip_url
}

build {
  sources = ["source.nixos-sd.rpi"]

  post-processor "manifest" {
    output = "output-rpi/packer-manifest.json"
  }
}
