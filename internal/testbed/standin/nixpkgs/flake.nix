# The stand-in nixpkgs as a flake: lib.nixosSystem as nixpkgs' own.
{
  outputs =
    { self }:
    {
      lib = import ./lib // {
        nixosSystem = args: import ./nixos/lib/eval-config.nix ({ system = "aarch64-linux"; } // args);
      };
    };
}
