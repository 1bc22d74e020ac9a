#!/usr/bin/env bash
# Builds the test bed's instance root: a Debian root file system made with
# mmdebstrap from Debian's archive, set up as Debian's cloud images are on
# first boot (cloud-init's default user `admin`, locked password, passwordless
# sudo in /etc/sudoers.d/90-cloud-init-users, SSH keys only), and a local apt
# mirror of the archive holding exactly the .deb files `apt-get install
# nix-bin` needs on that root (with its recommends, as apt installs them by
# default), served under Debian's own signed index.
#
# Two test bed hooks are built in: /usr/bin/nix is diverted to
# /usr/bin/nix.real (the stand-in nix takes its place once nix-bin is
# installed, and runs the real one), and apt runs the host's
# /usr/local/lib/nixos-sd-standin/after-dpkg after each dpkg run.
#
#   scripts/debian-root.sh [SUITE [ARCH]]   (SUITE: trixie, the default;
#                                            ARCH: this machine's, or arm64)
#
# An arm64 root (on an amd64 machine) runs Debian's arm64 programs through
# binfmt_misc and qemu-user-static, registered with the F flag
# (scripts/testbed-deps.sh does it): mmdebstrap runs its maintainer scripts
# that way, and so do the hosts. It is made as small as a host needs (variant
# minbase with the packages below, plus systemd-sysv, as a Debian cloud image
# boots with it), since everything in it runs emulated; dpkg leaves out
# documentation, manual pages and translations there (a speed-only
# difference: the hosts' apt-get install of Nix unpacks fewer files).
#
# Output, under .cache/debian-SUITE/ (.cache/debian-SUITE-ARCH/ for another
# architecture than this machine's): root/ (the file system; the hosts mount
# it read-only below a private overlay), mirror/ (dists/ and pool/; the hosts
# see it as file:/srv/debian-mirror, which the root's apt sources name) and
# recipe (the hash of this script and the suite: the cache is rebuilt only
# when it changes). Needs root and the Debian archive.
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
suite="${1:-trixie}"
archive="${NIXOS_SD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
native="$(dpkg --print-architecture)"
arch="${2:-$native}"
out="$root_dir/.cache/debian-$suite"
# What Debian's cloud images carry that the plugin's remote side uses, plus the
# tools the stand-in nix makes its image with (fdisk, dosfstools, mtools, zstd).
include=openssh-server,openssh-sftp-server,sudo,ca-certificates,curl,procps,iproute2,less,zstd,fdisk,dosfstools,mtools,e2fsprogs
variant=important
dpkgopts=()
if [ "$arch" != "$native" ]; then
	case "$arch" in
	arm64) qemu=aarch64 ;;
	*)
		echo "debian-root: ARCH must be $native (this machine's) or arm64, got $arch" >&2
		exit 1
		;;
	esac
	out="$root_dir/.cache/debian-$suite-$arch"
	variant=minbase
	include="$include,systemd-sysv"
	dpkgopts=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
		--dpkgopt='path-exclude=/usr/share/info/*')
fi

recipe="$( (cat "$0"; echo "$suite $arch $archive") | sha256sum | cut -d' ' -f1)"
if [ -f "$out/recipe" ] && [ "$(cat "$out/recipe")" = "$recipe" ] && [ -d "$out/root/etc" ] && [ -d "$out/mirror/dists" ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "debian-root: building $out needs root" >&2
	exit 1
fi
command -v mmdebstrap >/dev/null || {
	echo "debian-root: mmdebstrap is missing; run scripts/testbed-deps.sh" >&2
	exit 1
}
if [ "$arch" != "$native" ] && ! grep -qs '^flags:.*F' "/proc/sys/fs/binfmt_misc/qemu-$qemu"; then
	echo "debian-root: building the $arch root runs $arch programs, which needs qemu-user-static registered with binfmt_misc with the F flag (/proc/sys/fs/binfmt_misc/qemu-$qemu); run scripts/testbed-deps.sh as root" >&2
	exit 1
fi

start=$(date +%s)
echo "debian-root: building the Debian $suite root in $out (recipe $recipe)" >&2
rm -rf "$out.new"
mkdir -p "$out.new/mirror/pool"

# shellcheck disable=SC2016 # the hooks' $1 is mmdebstrap's, not ours
mmdebstrap --quiet --variant="$variant" --architectures="$arch" --include="$include" "${dpkgopts[@]}" \
	--customize-hook='chroot "$1" useradd --comment Debian --groups adm,audio,cdrom,dialout,dip,floppy,plugdev,sudo,video --shell /bin/bash --create-home admin' \
	--customize-hook='chroot "$1" passwd --lock admin' \
	--customize-hook='printf "%s\n" "# Created by cloud-init on instance boot." "" "# User rules for admin" "admin ALL=(ALL) NOPASSWD:ALL" >"$1/etc/sudoers.d/90-cloud-init-users"; chmod 0440 "$1/etc/sudoers.d/90-cloud-init-users"' \
	--customize-hook='printf "PasswordAuthentication no\n" >"$1/etc/ssh/sshd_config.d/50-cloud-init.conf"' \
	--customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
	--customize-hook='env -u APT_CONFIG chroot "$1" apt-get clean' \
	--customize-hook='env -u APT_CONFIG chroot "$1" apt-get install --download-only --yes --quiet -o APT::Install-Recommends=true nix-bin' \
	--customize-hook="cp \"\$1\"/var/cache/apt/archives/*.deb '$out.new/mirror/pool/'" \
	--customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/etc/apt/sources.list' \
	--customize-hook="printf '%s\n' 'Types: deb' 'URIs: file:/srv/debian-mirror' 'Suites: $suite' 'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >\"\$1/etc/apt/sources.list.d/debian.sources\"" \
	--customize-hook='mkdir -p "$1/srv/debian-mirror"' \
	--customize-hook='chroot "$1" dpkg-divert --quiet --no-rename --divert /usr/bin/nix.real --add /usr/bin/nix' \
	--customize-hook='printf "%s\n" "// nixos-sd test bed: plays what the test bed replaces after each dpkg run." "DPkg::Post-Invoke { \"[ ! -x /usr/local/lib/nixos-sd-standin/after-dpkg ] || /usr/local/lib/nixos-sd-standin/after-dpkg\"; };" >"$1/etc/apt/apt.conf.d/99nixos-sd-testbed"' \
	"$suite" "$out.new/root" "deb $archive $suite main"

# The mirror's index is Debian's own: the signed InRelease and the Packages
# files it lists, fetched at the same moment as the packages above (the
# archive serves one version of each package per suite).
dists="$out.new/mirror/dists/$suite"
mkdir -p "$dists"
curl -fsS "$archive/dists/$suite/InRelease" -o "$dists/InRelease"
for f in "main/binary-$arch/Packages.xz" main/i18n/Translation-en.xz; do
	sum=$(awk -v f="$f" '/^SHA256:/{s=1;next} /^[A-Za-z]/{s=0} s&&$3==f{print $1}' "$dists/InRelease")
	[ -n "$sum" ] || continue
	mkdir -p "$dists/$(dirname "$f")/by-hash/SHA256"
	# By hash: the archive may publish a new index meanwhile.
	curl -fsS "$archive/dists/$suite/$(dirname "$f")/by-hash/SHA256/$sum" -o "$dists/$f"
	echo "$sum  $dists/$f" | sha256sum --quiet -c -
	ln "$dists/$f" "$dists/$(dirname "$f")/by-hash/SHA256/$sum"
done
# pool/ holds the files flat; the Packages index names them by their archive
# path (pool/main/n/nix/...), so link each one there.
xz -dc "$dists/main/binary-$arch/Packages.xz" | awk '/^Filename: /{print $2}' >"$out.new/filenames"
for deb in "$out.new"/mirror/pool/*.deb; do
	# apt names a version's epoch in the file name (1%3a2.3-1); the archive
	# does not.
	name=$(basename "$deb" | sed 's/_[0-9]*%3a/_/')
	path=$(grep -F "/$name" "$out.new/filenames" | head -n1 || true)
	[ -n "$path" ] || {
		echo "debian-root: $name is not in $suite's index" >&2
		exit 1
	}
	mkdir -p "$out.new/mirror/$(dirname "$path")"
	mv "$deb" "$out.new/mirror/$path"
done
rm -f "$out.new/filenames"

echo "$recipe" >"$out.new/recipe"
rm -rf "$out"
mv "$out.new" "$out"
echo "debian-root: built in $(($(date +%s) - start))s: root $(du -sh "$out/root" | cut -f1), mirror $(du -sh "$out/mirror" | cut -f1)" >&2
