# expect: flake: "github:me/nixos-pi" must be a flake reference and a nixosConfigurations attribute
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "null" "aarch64" {
  communicator = "none"
}

build {
  sources = ["source.null.aarch64"]

  provisioner "nixos-sd" {
    flake = "github:me/nixos-pi"
  }
}
