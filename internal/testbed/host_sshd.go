package testbed

import (
	"bufio"
	"context"
	"fmt"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nsSSHDir holds the host's SSH host key, inside the host.
const nsSSHDir = standinState + "/sshd"

// sshdConfig is the test bed's drop-in for Debian's sshd_config (which
// includes sshd_config.d/*.conf first, so these values win): the host keys
// cloud-init's stand-in writes, the pid file where tests read it and verbose
// logs. Everything else, MaxSessions included, is Debian's default.
func sshdConfig(h *Host) string {
	return fmt.Sprintf(`# nixos-sd test bed host %s
HostKey %s/ssh_host_rsa_key
HostKey %s/ssh_host_ecdsa_key
HostKey %s/ssh_host_ed25519_key
PidFile %s/sshd.pid
LogLevel VERBOSE
`, h.ID, nsSSHDir, nsSSHDir, nsSSHDir, nsSSHDir)
}

// sshdScript runs inside the host's network, mount and UTS namespaces: it
// mounts the Debian root below the host's overlay, the host's folders and the
// kernel file systems into it, checks the mounts (a stand-in shutdown that is
// not in place could shut the real machine down), names the host and becomes
// Debian's sshd, chrooted into the root.
func (h *Host) sshdScript() string {
	var b strings.Builder
	b.WriteString("set -eu\n")
	fmt.Fprintf(&b, "r=%s\n", remotecmd.Quote(filepath.Join(h.Dir, "rootfs")))
	lower, upper, work := "", filepath.Join(h.Dir, "upper"), filepath.Join(h.Dir, "work")
	if h.pool != nil {
		lower = h.pool.root.FS
	}
	fmt.Fprintf(&b, "mount -t overlay overlay -o %s \"$r\"\n", remotecmd.Quote("lowerdir="+lower+",upperdir="+upper+",workdir="+work))
	for _, m := range h.bindMounts() {
		fmt.Fprintf(&b, "mkdir -p \"$r\"%s\nmount --bind %s \"$r\"%s\n", m[1], remotecmd.Quote(m[0]), m[1])
	}
	if h.pool != nil {
		fmt.Fprintf(&b, "mount -o remount,bind,ro \"$r\"%s\n", hostMirror)
	}
	b.WriteString("mount -t proc proc \"$r/proc\"\n" +
		"mount -t sysfs sysfs \"$r/sys\"\n" +
		"mount --rbind /dev \"$r/dev\"\n" +
		"mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs \"$r/run\"\n" +
		"mkdir -p \"$r/run/sshd\"\n")
	for _, m := range h.bindMounts() {
		fmt.Fprintf(&b, "mountpoint -q \"$r\"%s || { echo 'testbed: %s is not mounted; not starting sshd' >&2; exit 97; }\n", m[1], m[1])
	}
	b.WriteString("for f in shutdown poweroff halt reboot; do\n" +
		"  grep -q 'Stand-in for shutdown' \"$r/usr/local/sbin/$f\" || { echo \"testbed: /usr/local/sbin/$f is not the stand-in; not starting sshd\" >&2; exit 97; }\n" +
		"done\n")
	fmt.Fprintf(&b, "echo %s >/proc/sys/kernel/hostname\n", h.hostname())
	fmt.Fprintf(&b, "exec chroot \"$r\" %s -D -e\n", sshdPath)
	return b.String()
}

func (h *Host) startSSHD() error {
	logFile, err := os.OpenFile(filepath.Join(h.Dir, "sshd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	h.logFile = logFile
	cmd := exec.Command("ip", "netns", "exec", h.net.name,
		"unshare", "--mount", "--uts", "--propagation", "private",
		"sh", "-c", h.sshdScript())
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	// sshd goes when this process dies, and is not in its process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting sshd in %s: %w", h.net.name, err)
	}
	h.cmd = cmd
	go func() {
		h.exitErr = cmd.Wait()
		close(h.exited)
	}()
	return nil
}

// waitReady waits until sshd accepts TCP connections on NSAddr:22.
func (h *Host) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(sshReadyTimeout)
	addr := net.JoinHostPort(h.NSAddr, "22")
	for {
		c, err := net.DialTimeout("tcp", addr, 250*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-h.exited:
			return fmt.Errorf("sshd exited (%v) before accepting connections; its log:\n%s", h.exitErr, tail(filepath.Join(h.Dir, "sshd.log"), 20))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd did not accept connections on %s within %v; its log:\n%s", addr, sshReadyTimeout, tail(filepath.Join(h.Dir, "sshd.log"), 20))
		}
	}
}

// checkMounts verifies, in sshd's /proc/PID/mountinfo, that each of the
// host's folders is mounted at its place.
func (h *Host) checkMounts() error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", h.cmd.Process.Pid))
	if err != nil {
		return fmt.Errorf("reading sshd's mounts: %w", err)
	}
	defer f.Close()
	roots := map[string]string{} // mount point -> root of its last mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 {
			roots[unescapeMountinfo(fields[4])] = unescapeMountinfo(fields[3])
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading sshd's mounts: %w", err)
	}
	for _, m := range h.bindMounts() {
		src, err := filepath.EvalSymlinks(m[0])
		if err != nil {
			return err
		}
		root, ok := roots[m[1]]
		if !ok || !strings.HasSuffix(src, root) || root == "/" {
			return fmt.Errorf("%s is not bind-mounted from %s in the host (mount root %q)", m[1], src, root)
		}
	}
	return nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func tail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	ls := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
