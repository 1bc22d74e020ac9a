# Expose the minimum required version for evaluating Nixpkgs
"2.18.0"
