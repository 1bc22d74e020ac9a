#!/bin/bash
# Runs on a test bed host after each dpkg run (apt's DPkg::Post-Invoke, set in
# the host's Debian root). It plays the parts of an EC2 instance the test bed
# replaces:
#
# - Once nix-bin has put the real nix at /usr/bin/nix.real (the root diverts
#   it there), /usr/bin/nix becomes the stand-in nix next to this script.
# - As systemd does on a booted instance, a socket unit a package enabled is
#   listened on: nix-setup-systemd enables nix-daemon.socket, and the daemon
#   then serves /nix/var/nix/daemon-socket/socket (in the folder the
#   package's tmpfiles.d entry made: root:nix-users, mode 0770).
set -u
here=$(dirname "$(readlink -f "$0")")
if [ -e /usr/bin/nix.real ] && [ ! -e /usr/bin/nix ]; then
	ln -s "$here/nix" /usr/bin/nix
fi
socket=/nix/var/nix/daemon-socket/socket
if [ -e /etc/systemd/system/sockets.target.wants/nix-daemon.socket ] && [ -x /usr/bin/nix.real ] && [ ! -S "$socket" ]; then
	setsid bash -c 'exec -a nix-daemon /usr/bin/nix.real --daemon' </dev/null >>/var/log/nix-daemon.log 2>&1 &
	for _ in $(seq 50); do
		[ ! -S "$socket" ] || break
		sleep 0.1
	done
fi
exit 0
