source "nixos-sd" "pi" {}

build { sources = ["source.nixos-sd.pi"] }
