package testbed

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

type adminIDs struct{ uid, gid int }

func lookupAdmin() (adminIDs, error) {
	u, err := user.Lookup(hostUser)
	if err != nil {
		return adminIDs{}, fmt.Errorf("user %s is missing (NewHostPool creates it): %w", hostUser, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return adminIDs{}, fmt.Errorf("user %s has a non-numeric uid/gid %s/%s", hostUser, u.Uid, u.Gid)
	}
	return adminIDs{uid, gid}, nil
}

// safeName makes id usable as a folder name.
func safeName(id string) string {
	var b strings.Builder
	for _, r := range id {
		if b.Len() >= 48 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), ".")
	if s == "" {
		s = "host"
	}
	return s
}

// populateDir creates the host's folder:
//
//	home/   -> /home/admin (owned by admin; .ssh/authorized_keys)
//	bin/    -> /usr/local/bin (nix, nix-build)
//	sbin/   -> /usr/local/sbin (shutdown, poweroff, halt, reboot)
//	state/  -> /var/lib/nixos-sd-standin (standin.conf, logs, store/, sshd/)
//	tmp/    -> /tmp
//	sshd.log
func (p *HostPool) populateDir(ctx context.Context, h *Host, admin adminIDs, keys []string) error {
	if _, err := os.Stat(h.Dir); err == nil {
		return fmt.Errorf("folder %s already exists", h.Dir)
	}
	d := func(parts ...string) string { return filepath.Join(append([]string{h.Dir}, parts...)...) }
	for _, sub := range []string{"", "home", "home/.ssh", "bin", "sbin", "state", "state/store", "state/sshd", "tmp"} {
		if err := os.MkdirAll(d(sub), 0o755); err != nil {
			return err
		}
	}
	modes := map[string]os.FileMode{
		"tmp":         0o777 | os.ModeSticky,
		"state/store": 0o777 | os.ModeSticky,
		"state/sshd":  0o700,
		"home/.ssh":   0o700,
	}
	for sub, m := range modes {
		if err := os.Chmod(d(sub), m); err != nil {
			return err
		}
	}
	if err := copySkel(d("home")); err != nil {
		return err
	}
	if err := os.WriteFile(d("home/.ssh/authorized_keys"), []byte(authorizedKeysFile(keys)), 0o600); err != nil {
		return err
	}
	if err := chownTree(d("home"), admin.uid, admin.gid); err != nil {
		return err
	}
	if err := installStandIns(d("bin"), d("sbin")); err != nil {
		return err
	}
	if err := os.WriteFile(d("state/standin.conf"), []byte(p.opts.StandIn.conf()), 0o644); err != nil {
		return err
	}
	// The stand-ins may run as admin or as root: both append to the logs.
	for _, f := range []string{"state/shutdown.log", "state/standin-calls.log"} {
		if err := os.WriteFile(d(f), nil, 0o666); err != nil {
			return err
		}
		if err := os.Chmod(d(f), 0o666); err != nil {
			return err
		}
	}
	if err := run(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nixos-sd-testbed-"+safeName(h.ID),
		"-f", d("state/sshd/ssh_host_ed25519_key")); err != nil {
		return fmt.Errorf("making the host key: %w", err)
	}
	return os.WriteFile(d("state/sshd/sshd_config"), []byte(sshdConfig(h)), 0o600)
}

func authorizedKeysFile(keys []string) string {
	var b strings.Builder
	for _, k := range keys {
		for _, line := range strings.Split(k, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// copySkel copies /etc/skel's files (a login shell's dot files) into home.
func copySkel(home string) error {
	entries, err := os.ReadDir("/etc/skel")
	if err != nil {
		return nil // no skeleton: an empty home is fine
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/etc/skel", e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(home, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func chownTree(root string, uid, gid int) error {
	return filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// bindMounts are the host's private folders: source under Dir, mount point.
// /tmp goes last: Dir itself may be under /tmp.
func (h *Host) bindMounts() [][2]string {
	m := [][2]string{
		{filepath.Join(h.Dir, "home"), hostHome},
		{filepath.Join(h.Dir, "bin"), "/usr/local/bin"},
		{filepath.Join(h.Dir, "sbin"), "/usr/local/sbin"},
		{filepath.Join(h.Dir, "state"), standinState},
	}
	if h.pool != nil {
		m = append(m, h.pool.extraMounts...)
	}
	return append(m, [2]string{filepath.Join(h.Dir, "tmp"), "/tmp"})
}
