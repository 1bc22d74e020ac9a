package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
)

const (
	hostUser     = "admin"
	hostHome     = "/home/admin"
	standinState = "/var/lib/nixos-sd-standin"
	// hostsNet is the range the hosts' /30s come from.
	hostsNet = "10.213.0.0/16"
)

// sshdPath is the OpenSSH server the hosts run, inside their Debian root.
const sshdPath = "/usr/sbin/sshd"

// hostTools are the programs the machine needs to run hosts and the stand-in
// tests, with the Debian package that has each.
var hostTools = [][2]string{
	{"ip", "iproute2"}, {"tc", "iproute2"}, {"unshare", "util-linux"}, {"nsenter", "util-linux"}, {"mount", "mount"},
	{"mountpoint", "util-linux"}, {"chroot", "coreutils"}, {"ssh-keygen", "openssh-client"},
	{"sfdisk", "fdisk"}, {"mkfs.vfat", "dosfstools"}, {"mkfs.ext4", "e2fsprogs"},
	{"mcopy", "mtools"}, {"zstd", "zstd"}, {"base64", "coreutils"}, {"bash", "bash"},
}

var machineSetup sync.Mutex

// setupMachine prepares this machine for hosts, idempotently: it checks the
// tools and routes the hosts' range nowhere but to the hosts. The hosts' users
// live in their Debian root, not on the machine.
func setupMachine(ctx context.Context, logf func(string, ...any)) error {
	if os.Geteuid() != 0 {
		return errors.New("testbed: the instance hosts need root (network namespaces, veth pairs, overlay and bind mounts, chroot); " +
			"run the end-to-end tests as root, e.g. `sudo -E go test -tags e2e ./...` or `sudo make e2e`")
	}
	machineSetup.Lock()
	defer machineSetup.Unlock()

	var missing []string
	for _, t := range hostTools {
		if _, err := exec.LookPath(t[0]); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", t[0], t[1]))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("testbed: the instance hosts need %s; install them with `make testbed-deps`", strings.Join(missing, ", "))
	}

	// Addresses of 10.213.0.0/16 without a host (not yet started, or
	// stopped) must not leave the machine: each host's /30 route is more
	// specific than this one.
	if err := run(ctx, "ip", "route", "replace", "unreachable", hostsNet); err != nil {
		return fmt.Errorf("testbed: routing %s nowhere outside the hosts: %w", hostsNet, err)
	}
	return joinDefaultVPC(ctx)
}
