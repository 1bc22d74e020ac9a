#!/usr/bin/env bash
# Installs what the test bed needs: Debian packages (ssh-keygen, tools to make SD images, tc,
# ShellCheck, nix-instantiate for parsing, nftables for security groups, mmdebstrap), moto's EC2
# server in an ignored Python venv, and the instances' Debian roots with their apt mirrors
# (scripts/debian-root.sh, cached under .cache/debian-trixie and .cache/debian-bookworm).
# Idempotent: does nothing that is already done.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
moto_version="5.2.5"

pkgs=(openssh-server openssh-client sudo shellcheck dosfstools fdisk e2fsprogs mtools zstd iproute2 nftables nix-bin mmdebstrap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "testbed-deps: missing Debian packages ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "testbed-deps: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv="$root/.cache/venv"
if ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$moto_version')" 2>/dev/null; then
  echo "testbed-deps: installing moto[server]==$moto_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$moto_version"
fi

# Debian 13, and Debian 12 (whose Nix is too old for current nixpkgs: the test
# of that case), built side by side: each mostly waits on the archive.
"$root/scripts/debian-root.sh" trixie &
trixie=$!
"$root/scripts/debian-root.sh" bookworm &
bookworm=$!
wait "$trixie"
wait "$bookworm"
