package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// debianSuite is the Debian release the hosts run unless
// HostPoolOptions.DebianSuite says otherwise: Debian 13, the plugin's default.
const debianSuite = "trixie"

// debianRoot is the Debian root file system scripts/debian-root.sh builds and
// the local apt mirror next to it.
type debianRoot struct {
	// FS is the root file system; every host mounts it read-only below a
	// private overlay.
	FS string
	// Mirror is the apt mirror (dists/, pool/), seen in the host as
	// file:/srv/debian-mirror.
	Mirror string
	// AdminUID and AdminGID are user admin's ids in FS's /etc/passwd.
	AdminUID, AdminGID int
}

// Paths inside a host.
const (
	hostMirror     = "/srv/debian-mirror"
	hostStandInDir = "/usr/local/lib/nixos-sd-standin"
)

// findDebianRoot locates the cached root of suite (empty: trixie) in the
// repository's .cache/debian-SUITE, or .cache/debian-SUITE-ARCH for arch
// (empty: this machine's).
func findDebianRoot(suite, arch string) (debianRoot, error) {
	if suite == "" {
		suite = debianSuite
	}
	repo, err := RepoRoot()
	if err != nil {
		return debianRoot{}, err
	}
	dir := filepath.Join(repo, ".cache", debianRootDir(suite, arch))
	r := debianRoot{FS: filepath.Join(dir, "root"), Mirror: filepath.Join(dir, "mirror")}
	for _, p := range []string{filepath.Join(r.FS, "etc", "debian_version"), filepath.Join(r.Mirror, "dists", suite, "InRelease")} {
		if _, err := os.Stat(p); err != nil {
			return debianRoot{}, fmt.Errorf("testbed: the Debian %s root is not built (%s is missing); run `make testbed-deps` (scripts/debian-root.sh %s)", suite, p, strings.TrimSpace(suite+" "+arch))
		}
	}
	uid, gid, err := passwdIDs(filepath.Join(r.FS, "etc", "passwd"), hostUser)
	if err != nil {
		return debianRoot{}, fmt.Errorf("testbed: the Debian root %s: %w; rebuild it with scripts/debian-root.sh", r.FS, err)
	}
	r.AdminUID, r.AdminGID = uid, gid
	return r, nil
}

// debianRootDir is the folder under .cache that scripts/debian-root.sh SUITE
// [ARCH] builds.
func debianRootDir(suite, arch string) string {
	if arch == "" {
		return "debian-" + suite
	}
	return "debian-" + suite + "-" + arch
}

// passwdIDs reads a user's uid and gid from a passwd file.
func passwdIDs(passwd, name string) (uid, gid int, err error) {
	data, err := os.ReadFile(passwd)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 || f[0] != name {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("user %s has a non-numeric uid/gid %s/%s", name, f[2], f[3])
		}
		return uid, gid, nil
	}
	return 0, 0, fmt.Errorf("no user %s in %s", name, passwd)
}
