# Stand-in for nixpkgs' AArch64 SD card image module.
{ ... }:
{
}
