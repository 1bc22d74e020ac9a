#!/usr/bin/env bash
# Installs what the test bed needs: Debian packages (ssh-keygen, tools to make SD images, tc,
# ShellCheck, nix-instantiate for parsing, nftables for security groups, mmdebstrap,
# qemu-user-static and arch-test for the arm64 hosts), moto's EC2 server in an ignored Python venv, and the
# instances' Debian roots with their apt mirrors (scripts/debian-root.sh, cached under
# .cache/debian-trixie, .cache/debian-bookworm and .cache/debian-trixie-arm64). Registers
# qemu-user-static's aarch64 entry with binfmt_misc when it is missing.
# Idempotent: does nothing that is already done.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
moto_version="5.2.5"

pkgs=(openssh-server openssh-client sudo shellcheck dosfstools fdisk e2fsprogs mtools zstd iproute2 nftables nix-bin mmdebstrap qemu-user-static arch-test)
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

# The arm64 hosts (and mmdebstrap, building their root) run Debian's arm64 programs through
# qemu-user-static. Debian's package registers its binfmt_misc entries only through systemd or
# binfmt-support, and without the C flag; register the aarch64 line it ships with C added (F
# opens the interpreter now, so that it need not exist inside the hosts' roots; C gives a setuid
# program such as sudo its owner's rights, as on a real machine), replacing an entry without them.
binfmt=/proc/sys/fs/binfmt_misc
if ! grep -qs '^flags: .*C' "$binfmt/qemu-aarch64" || ! grep -qs '^flags: .*F' "$binfmt/qemu-aarch64"; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "testbed-deps: qemu-user-static's aarch64 entry is not registered with binfmt_misc with the flags F and C; run as root" >&2
    exit 1
  fi
  echo "testbed-deps: registering qemu-user-static's aarch64 entry with binfmt_misc (flags F and C)" >&2
  line=$(grep '^:qemu-aarch64:' /usr/lib/binfmt.d/qemu-aarch64.conf)
  case "${line##*:}" in *C*) ;; *) line="${line}C" ;; esac
  if ! { mountpoint -q "$binfmt" || mount -t binfmt_misc binfmt_misc "$binfmt"; } ||
    ! { [ ! -e "$binfmt/qemu-aarch64" ] || echo -1 >"$binfmt/qemu-aarch64"; } ||
    ! printf '%s\n' "$line" >"$binfmt/register"; then
    echo "testbed-deps: binfmt_misc cannot be registered on this machine (above), so the arm64 root cannot be built and TestBuilderArm64 cannot run; it needs a kernel with binfmt_misc and root in the initial namespaces" >&2
    exit 1
  fi
fi

# Debian 13, Debian 12 (whose Nix is too old for current nixpkgs: the test of that case) and
# Debian 13 for arm64 (the real-arm64 test), built side by side: the first two mostly wait on
# the archive, the third mostly runs emulated maintainer scripts.
"$root/scripts/debian-root.sh" trixie arm64 &
arm64=$!
"$root/scripts/debian-root.sh" trixie &
trixie=$!
"$root/scripts/debian-root.sh" bookworm &
bookworm=$!
wait "$trixie"
wait "$bookworm"
wait "$arm64"
