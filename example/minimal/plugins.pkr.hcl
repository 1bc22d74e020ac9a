# The plugin the build needs; `packer init .` installs it. The build itself is
# build.pkr.hcl: a Raspberry Pi 3/4 image with the built-in configuration, in
# the region of your AWS configuration (AWS_REGION or the profile's region),
# that lets in your own SSH keys (~/.ssh/*.pub and the SSH agent's).
packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}
