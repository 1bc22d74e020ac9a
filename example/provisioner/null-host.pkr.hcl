# Builds the image on an AArch64 machine you already have, reached over SSH.
#
#   packer build -var host=pi-builder.example.org example/provisioner

packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

variable "host" {
  type    = string
  default = "aarch64-builder.example.org"
}

variable "username" {
  type    = string
  default = "admin"
}

source "null" "aarch64" {
  communicator   = "ssh"
  ssh_host       = var.host
  ssh_username   = var.username
  ssh_agent_auth = true
}

build {
  sources = ["source.null.aarch64"]

  provisioner "nixos-sd" {
    nixos_config = "${path.root}/../configuration.nix"
  }
}
