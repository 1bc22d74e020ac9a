# The test bed's stand-in of nixos-hardware (github:NixOS/nixos-hardware),
# which the hosts cannot fetch: the board modules the examples use, under
# their real names. Each sets a little of what the real module sets; the
# stand-in NixOS evaluation imports it without typing options.
{
  outputs =
    { self }:
    {
      nixosModules.raspberry-pi-5 = import ./raspberry-pi/5;
    };
}
