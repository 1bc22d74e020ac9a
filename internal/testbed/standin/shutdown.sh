#!/usr/bin/env bash
# Stand-in for shutdown, poweroff, halt and reboot on the test bed's instance
# hosts (installed in /usr/local/sbin, which comes first on sudo's secure_path
# and the default PATH). It only records the call: one line per call with the
# shell-quoted argv, in $STATE/shutdown.log, and exits 0. The host keeps
# running; the test bed decides what a shutdown means.
set -euo pipefail
state=${NIXOS_SD_STANDIN_STATE:-/var/lib/nixos-sd-standin}
prog=$(basename "$0")
{
	printf '%q' "$prog"
	for a in "$@"; do printf ' %q' "$a"; done
	printf '\n'
} >>"$state/shutdown.log"
case "$prog" in
reboot) echo "stand-in: reboot recorded; this host keeps running" >&2 ;;
*) echo "stand-in: $prog recorded; this host keeps running" >&2 ;;
esac
