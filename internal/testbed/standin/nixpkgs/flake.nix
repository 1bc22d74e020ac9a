# The stand-in nixpkgs as a flake: lib.nixosSystem as nixpkgs' own, which
# passes system = null to eval-config.nix, so a configuration must set
# nixpkgs.hostPlatform (or nixpkgs.system, or pass system).
{
  outputs =
    { self }:
    {
      lib = import ./lib // {
        nixosSystem = args: import ./nixos/lib/eval-config.nix ({ system = null; } // args);
      };
    };
}
