package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

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
//	rootfs/ the host's / : the Debian root below an overlay of upper/
//	upper/  the overlay's writable layer (work/ is its work folder)
//	home/   -> /home/admin (owned by admin; .ssh/authorized_keys)
//	bin/    -> /usr/local/lib/nixos-sd-standin (the stand-in nix, the
//	           after-dpkg hook, the stand-in nixpkgs)
//	sbin/   -> /usr/local/sbin (shutdown, poweroff, halt, reboot)
//	localbin/ -> /usr/local/bin (the stand-in uname, but on an arm64 root;
//	           tests put tools there that shadow the system's)
//	state/  -> /var/lib/nixos-sd-standin (standin.conf, logs, store/, sshd/)
//	tmp/    -> /tmp (a link to tmpfs/tmp, a small tmpfs: host_boot.go)
//	sshd.log
func (p *HostPool) populateDir(ctx context.Context, h *Host, root debianRoot, keys []string) error {
	if _, err := os.Stat(h.Dir); err == nil {
		return fmt.Errorf("folder %s already exists", h.Dir)
	}
	d := func(parts ...string) string { return filepath.Join(append([]string{h.Dir}, parts...)...) }
	for _, sub := range []string{"", "rootfs", "upper", "upper/etc/ssh/sshd_config.d", "work", "home", "home/.ssh",
		"bin", "sbin", "localbin", "state", "state/store", "state/sshd", "upper/etc/apt/apt.conf.d"} {
		if err := os.MkdirAll(d(sub), 0o755); err != nil {
			return err
		}
	}
	if err := h.mountTmp(); err != nil {
		return err
	}
	modes := map[string]os.FileMode{
		"state/store": 0o777 | os.ModeSticky,
		"state/sshd":  0o700,
		"home/.ssh":   0o700,
	}
	for sub, m := range modes {
		if err := os.Chmod(d(sub), m); err != nil {
			return err
		}
	}
	if err := copySkel(filepath.Join(root.FS, "etc", "skel"), d("home")); err != nil {
		return err
	}
	if err := os.WriteFile(d("home/.ssh/authorized_keys"), []byte(authorizedKeysFile(keys)), 0o600); err != nil {
		return err
	}
	if err := chownTree(d("home"), root.AdminUID, root.AdminGID); err != nil {
		return err
	}
	// An arm64 root's hosts are aarch64 by emulation: no stand-in plays it.
	localBin, conf := d("localbin"), p.opts.StandIn.conf()
	if p.emulator != "" {
		localBin, conf = "", p.opts.StandIn.realConf()
	}
	if err := installStandInsWithUname(d("bin"), d("sbin"), localBin); err != nil {
		return err
	}
	if err := os.WriteFile(d("state/standin.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	// The stand-ins may run as admin or as root: both append to the logs.
	for _, f := range []string{"state/shutdown.log", "state/standin-calls.log", "state/standin-machine.log",
		"state/standin-flake-inputs.log", "state/standin-nixpkgs-branch"} {
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
	// What cloud-init writes on an EC2 instance's first boot: its host name
	// (from its private address) in /etc/hostname and /etc/hosts.
	name := h.hostname()
	files := map[string]string{
		"upper/etc/hostname": name + "\n",
		"upper/etc/hosts":    "127.0.0.1 localhost\n127.0.1.1 " + name + "\n::1 localhost ip6-localhost ip6-loopback\n",
		"upper/etc/ssh/sshd_config.d/90-nixos-sd-testbed.conf":   sshdConfig(h),
		"upper/etc/apt/apt.conf.d/00nixos-sd-testbed-recommends": hostAptConf,
	}
	for f, content := range files {
		if err := os.WriteFile(d(f), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// hostname is the host's name as EC2 gives it: ip-A-B-C-D.
func (h *Host) hostname() string {
	return "ip-" + strings.ReplaceAll(h.NSAddr, ".", "-")
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

// copySkel copies skel's files (a login shell's dot files) into home.
func copySkel(skel, home string) error {
	entries, err := os.ReadDir(skel)
	if err != nil {
		return nil // no skeleton: an empty home is fine
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(skel, e.Name()))
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

// bindMounts are the host's private folders: source under Dir, mount point
// inside the host's root.
func (h *Host) bindMounts() [][2]string {
	m := [][2]string{
		{filepath.Join(h.Dir, "home"), hostHome},
		{filepath.Join(h.Dir, "bin"), hostStandInDir},
		{filepath.Join(h.Dir, "sbin"), "/usr/local/sbin"},
		{filepath.Join(h.Dir, "localbin"), "/usr/local/bin"},
		{filepath.Join(h.Dir, "state"), standinState},
		{filepath.Join(h.Dir, "tmp"), "/tmp"},
	}
	if h.pool != nil {
		m = append(m, [2]string{h.pool.root.Mirror, hostMirror})
		m = append(m, h.pool.extraMounts...)
	}
	return m
}
