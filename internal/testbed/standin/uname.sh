#!/bin/bash
# Stand-in for uname on the test bed's hosts (/usr/local/bin/uname, ahead of
# /usr/bin on PATH and in sudo's secure_path): the hosts run on this
# machine's kernel, but present themselves as the instances do. The machine
# is ARCH from /var/lib/nixos-sd-standin/standin.conf: aarch64 (the default,
# as EC2's Graviton instances), or x86_64 (also for x86_64-binfmt).
state=${NIXOS_SD_STANDIN_STATE:-/var/lib/nixos-sd-standin}
arch=$(sed -n 's/^ARCH=//p' "$state/standin.conf" 2>/dev/null)
case "${arch:-aarch64}" in
x86_64*) machine=x86_64 ;;
*) machine=aarch64 ;;
esac
real=$(/usr/bin/uname -m)
out=$(/usr/bin/uname "$@") || exit
printf '%s\n' "${out//$real/$machine}"
