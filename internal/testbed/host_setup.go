package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

const (
	hostUser     = "admin"
	hostHome     = "/home/admin"
	standinState = "/var/lib/nixos-sd-standin"
	sudoersFile  = "/etc/sudoers.d/nixos-sd-testbed"
	sudoersLine  = "admin ALL=(ALL) NOPASSWD:ALL"
	// hostsNet is the range the hosts' /30s come from.
	hostsNet = "10.213.0.0/16"
)

// sshdPath is the OpenSSH server the hosts run.
const sshdPath = "/usr/sbin/sshd"

// hostTools are the programs the hosts need, with the Debian package that
// has each.
var hostTools = [][2]string{
	{"ip", "iproute2"}, {"tc", "iproute2"}, {"unshare", "util-linux"}, {"nsenter", "util-linux"}, {"mount", "mount"},
	{"mountpoint", "util-linux"}, {sshdPath, "openssh-server"}, {"ssh-keygen", "openssh-client"},
	{"sudo", "sudo"}, {"visudo", "sudo"}, {"useradd", "passwd"}, {"usermod", "passwd"},
	{"sfdisk", "fdisk"}, {"mkfs.vfat", "dosfstools"}, {"mkfs.ext4", "e2fsprogs"},
	{"mcopy", "mtools"}, {"zstd", "zstd"}, {"base64", "coreutils"}, {"bash", "bash"},
}

var machineSetup sync.Mutex

// setupMachine prepares this machine for hosts, idempotently: the admin user
// (home, /bin/bash, not locked, passwordless sudo) and the mount points.
func setupMachine(ctx context.Context, logf func(string, ...any)) error {
	if os.Geteuid() != 0 {
		return errors.New("testbed: the instance hosts need root (network namespaces, veth pairs, sshd, bind mounts); " +
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

	if err := ensureAdminUser(ctx, logf); err != nil {
		return err
	}
	if err := ensureSudoers(ctx, logf); err != nil {
		return err
	}
	// Addresses of 10.213.0.0/16 without a host (not yet started, or
	// stopped) must not leave the machine: each host's /30 route is more
	// specific than this one.
	if err := run(ctx, "ip", "route", "replace", "unreachable", hostsNet); err != nil {
		return fmt.Errorf("testbed: routing %s nowhere outside the hosts: %w", hostsNet, err)
	}
	for _, d := range []string{standinState, "/run/sshd", "/usr/local/bin", "/usr/local/sbin", hostHome} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("testbed: creating mount point %s: %w", d, err)
		}
	}
	return nil
}

func ensureAdminUser(ctx context.Context, logf func(string, ...any)) error {
	u, err := user.Lookup(hostUser)
	if err != nil {
		logf("testbed: creating user %s", hostUser)
		if err := run(ctx, "useradd", "--create-home", "--home-dir", hostHome, "--shell", "/bin/bash", "--user-group", hostUser); err != nil {
			// Another process may have created it meanwhile.
			if u, err2 := user.Lookup(hostUser); err2 != nil || u == nil {
				return fmt.Errorf("testbed: creating user %s: %w", hostUser, err)
			}
		}
		if u, err = user.Lookup(hostUser); err != nil {
			return fmt.Errorf("testbed: user %s missing after useradd: %w", hostUser, err)
		}
	}
	if u.HomeDir != hostHome {
		return fmt.Errorf("testbed: user %s exists with home %s; the hosts need %s (fix with `usermod -d %s %s`)", hostUser, u.HomeDir, hostHome, hostHome, hostUser)
	}
	shell, locked, err := passwdShellAndLock(hostUser)
	if err != nil {
		return err
	}
	if shell != "/bin/bash" {
		if err := run(ctx, "usermod", "--shell", "/bin/bash", hostUser); err != nil {
			return fmt.Errorf("testbed: setting %s's shell: %w", hostUser, err)
		}
	}
	// sshd without PAM refuses accounts whose password starts with "!"
	// (useradd's default); "*" means no password but not locked.
	if locked {
		if err := run(ctx, "usermod", "--password", "*", hostUser); err != nil {
			return fmt.Errorf("testbed: unlocking %s for key-only SSH: %w", hostUser, err)
		}
	}
	return nil
}

// passwdShellAndLock reads a user's login shell from /etc/passwd and whether
// /etc/shadow locks the account.
func passwdShellAndLock(name string) (shell string, locked bool, err error) {
	field := func(file string, idx int) (string, error) {
		data, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) > idx && f[0] == name {
				return f[idx], nil
			}
		}
		return "", fmt.Errorf("no entry for %s", name)
	}
	if shell, err = field("/etc/passwd", 6); err != nil {
		return "", false, fmt.Errorf("testbed: reading %s's shell from /etc/passwd: %w", name, err)
	}
	pw, err := field("/etc/shadow", 1)
	if err != nil {
		return "", false, fmt.Errorf("testbed: reading %s's entry in /etc/shadow: %w", name, err)
	}
	return shell, strings.HasPrefix(pw, "!"), nil
}

func ensureSudoers(ctx context.Context, logf func(string, ...any)) error {
	want := []byte("# Written by the nixos-sd test bed (internal/testbed): the stand-in hosts' user.\n" + sudoersLine + "\n")
	if have, err := os.ReadFile(sudoersFile); err == nil && bytes.Equal(have, want) {
		return nil
	}
	logf("testbed: writing %s", sudoersFile)
	// sudo ignores files in sudoers.d whose names contain a dot.
	tmp := filepath.Join(filepath.Dir(sudoersFile), ".nixos-sd-testbed."+strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(tmp, want, 0o440); err != nil {
		return fmt.Errorf("testbed: writing %s: %w", tmp, err)
	}
	defer os.Remove(tmp)
	if err := os.Chmod(tmp, 0o440); err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	if err := run(ctx, "visudo", "-c", "-q", "-f", tmp); err != nil {
		return fmt.Errorf("testbed: the sudoers rule for %s does not check: %w", hostUser, err)
	}
	if err := os.Rename(tmp, sudoersFile); err != nil {
		return fmt.Errorf("testbed: installing %s: %w", sudoersFile, err)
	}
	return nil
}
