package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// HostPoolOptions configure a HostPool.
type HostPoolOptions struct {
	// WorkDir holds one folder per host; empty = a new temporary folder,
	// removed by Close.
	WorkDir string
	// BootDelay is how long Start waits before creating the host, like an
	// instance booting.
	BootDelay time.Duration
	// Link shapes the hosts' network; nil = unshaped.
	Link *LinkProfile
	// StandIn configures the image the stand-in nix makes.
	StandIn StandInOptions
	// KeepDirs keeps each host's folder (sshd.log, state/ with the stand-ins'
	// logs and images) after Stop, for post-mortems.
	KeepDirs bool
	// Logf receives progress lines; nil = none.
	Logf func(format string, args ...any)
}

// Host is a running stand-in instance: a network namespace with OpenSSH's
// sshd, user admin (passwordless sudo), a stand-in nix in /usr/local/bin,
// stand-in shutdown/poweroff/halt/reboot in /usr/local/sbin and a private
// /tmp, /home/admin and /var/lib/nixos-sd-standin, all bind-mounted from Dir
// in a mount namespace of its own.
type Host struct {
	// ID is the id Start was given (the instance id).
	ID string
	// Addr and Port are where the host answers SSH: the delay proxy on
	// 127.0.0.1 when the link has an RTT, else NSAddr port 22.
	Addr string
	Port int
	// Dir is the host's folder: home/, bin/, sbin/, state/, tmp/, sshd.log.
	Dir string
	// Namespace is the network namespace's name (ip netns).
	Namespace string
	// NSAddr is the host's own address in its namespace, where sshd listens
	// on port 22.
	NSAddr string

	pool    *HostPool
	net     *netns
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	slot    *hostSlot
	logFile *os.File

	mu       sync.Mutex
	stopped  bool
	shutdown []string // cached at Stop
	standin  []string // cached at Stop
}

// HostPool starts and stops hosts. Its methods are safe for concurrent use.
type HostPool struct {
	opts       HostPoolOptions
	logf       func(string, ...any)
	workDir    string
	ownWorkDir bool

	mu       sync.Mutex
	closed   bool
	hosts    map[string]*Host
	stopped  map[string]*Host
	starting map[string]bool
	pending  *hostSlot // the next host's slot

	// extraMounts are appended to every host's bind mounts (tests use it to
	// make a mount fail).
	extraMounts [][2]string
}

// hostSlot is what a host gets before it exists: its sequence number, its
// /30 and, with an RTT, its delay proxy, so its SSH endpoint can be told in
// advance.
type hostSlot struct {
	n      int
	subnet subnet
	proxy  *DelayProxy
}

func (s *hostSlot) endpoint() (string, int) {
	if s.proxy != nil {
		return s.proxy.Host(), s.proxy.Port()
	}
	return s.subnet.nsSide(), 22
}

const (
	sshReadyTimeout = 20 * time.Second
	stopTimeout     = 30 * time.Second
)

// NewHostPool prepares the machine (user admin, its sudoers rule, mount
// points; idempotent) and returns a pool with no hosts. It needs root.
func NewHostPool(opts HostPoolOptions) (*HostPool, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := opts.Link.validate(); err != nil {
		return nil, err
	}
	if err := opts.StandIn.validate(); err != nil {
		return nil, err
	}
	if opts.BootDelay < 0 {
		return nil, fmt.Errorf("testbed: HostPoolOptions.BootDelay must not be negative, got %v", opts.BootDelay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := setupMachine(ctx, logf); err != nil {
		return nil, err
	}
	p := &HostPool{
		opts:     opts,
		logf:     logf,
		workDir:  opts.WorkDir,
		hosts:    map[string]*Host{},
		stopped:  map[string]*Host{},
		starting: map[string]bool{},
	}
	if p.workDir == "" {
		d, err := os.MkdirTemp("", "nixos-sd-hosts-")
		if err != nil {
			return nil, fmt.Errorf("testbed: creating a folder for the hosts: %w", err)
		}
		p.workDir, p.ownWorkDir = d, true
	} else if err := os.MkdirAll(p.workDir, 0o755); err != nil {
		return nil, fmt.Errorf("testbed: creating the hosts' folder: %w", err)
	}
	abs, err := filepath.Abs(p.workDir)
	if err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	p.workDir = abs
	p.mu.Lock()
	_, err = p.pendingSlot()
	p.mu.Unlock()
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// slots hands out host sequence numbers and /30s for every pool of this
// process, so that two pools never pick the same subnet before either has
// created its interfaces.
var slots = struct {
	sync.Mutex
	nextN      int
	nextSubnet int
	reserved   map[int]bool
}{
	// Processes start in different blocks of 256 /30s.
	nextSubnet: (os.Getpid() % (subnetCount / slotsPerBlock)) * slotsPerBlock,
	reserved:   map[int]bool{},
}

func reserveSlot() (n int, s subnet, err error) {
	slots.Lock()
	defer slots.Unlock()
	for tries := 0; tries < subnetCount; tries++ {
		s = subnet{index: slots.nextSubnet % subnetCount}
		slots.nextSubnet++
		if s.index != 0 && !slots.reserved[s.index] && !subnetInUse(s) {
			slots.reserved[s.index] = true
			n = slots.nextN
			slots.nextN++
			return n, s, nil
		}
	}
	return 0, subnet{}, errors.New("testbed: every /30 of 10.213.0.0/16 is in use; delete stale test bed namespaces (ip netns list)")
}

func releaseSubnet(s subnet) {
	slots.Lock()
	delete(slots.reserved, s.index)
	slots.Unlock()
}

// release gives up a slot whose host never came up or has stopped.
func (s *hostSlot) release() {
	if s.proxy != nil {
		_ = s.proxy.Close()
	}
	releaseSubnet(s.subnet)
}

// pendingSlot returns the slot the next host gets, allocating it (and its
// delay proxy) if needed. p.mu is held.
func (p *HostPool) pendingSlot() (*hostSlot, error) {
	if p.pending != nil {
		return p.pending, nil
	}
	n, s, err := reserveSlot()
	if err != nil {
		return nil, err
	}
	slot := &hostSlot{n: n, subnet: s}
	if rtt := p.opts.Link.rtt(); rtt > 0 {
		upstream := net.JoinHostPort(s.nsSide(), "22")
		dp, err := NewDelayProxy("127.0.0.1:0", upstream, rtt/2, p.logf)
		if err != nil {
			releaseSubnet(s)
			return nil, err
		}
		// Until the host is up, its address is not ours to dial.
		dp.Hold()
		slot.proxy = dp
	}
	p.pending = slot
	return slot, nil
}

// NextEndpoint is where the next host to be started will answer SSH: with
// an RTT, the delay proxy on 127.0.0.1 (already listening), else the host's
// namespace address and port 22. Hosts get endpoints in the order their
// Start calls begin.
func (p *HostPool) NextEndpoint() (host string, port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, err := p.pendingSlot()
	if err != nil {
		p.logf("testbed: %v", err)
		return "", 0
	}
	return s.endpoint()
}

// Start waits BootDelay (or until ctx ends), then creates host id with the
// given authorized keys (each entry may hold several lines) and returns once
// its sshd accepts TCP connections. The host outlives ctx; end it with Stop.
func (p *HostPool) Start(ctx context.Context, id string, authorizedKeys []string) (*Host, error) {
	if id == "" {
		return nil, errors.New("testbed: Start needs a host id")
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("testbed: the host pool is closed")
	}
	if _, ok := p.hosts[id]; ok || p.starting[id] {
		p.mu.Unlock()
		return nil, fmt.Errorf("testbed: host %s is already running", id)
	}
	slot, err := p.pendingSlot()
	if err != nil {
		p.mu.Unlock()
		return nil, err
	}
	p.pending = nil
	p.starting[id] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.starting, id)
		p.mu.Unlock()
	}()

	if d := p.opts.BootDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			slot.release()
			return nil, fmt.Errorf("testbed: host %s: cancelled while booting: %w", id, ctx.Err())
		}
	}
	h, err := p.create(ctx, id, slot, authorizedKeys)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = p.stopHost(h)
		return nil, errors.New("testbed: the host pool was closed while the host started")
	}
	p.hosts[id] = h
	delete(p.stopped, id)
	p.mu.Unlock()
	p.logf("testbed: host %s up: namespace %s, sshd at %s:22, SSH endpoint %s:%d", id, h.Namespace, h.NSAddr, h.Addr, h.Port)
	return h, nil
}

// create builds the host in slot. On failure nothing is left running.
func (p *HostPool) create(ctx context.Context, id string, slot *hostSlot, keys []string) (_ *Host, err error) {
	h := &Host{
		ID:     id,
		Dir:    filepath.Join(p.workDir, fmt.Sprintf("%s-%d", safeName(id), slot.n)),
		NSAddr: slot.subnet.nsSide(),
		pool:   p,
		slot:   slot,
		exited: make(chan struct{}),
	}
	h.Addr, h.Port = slot.endpoint()
	defer func() {
		if err != nil {
			if h.net != nil || h.cmd != nil {
				_ = h.teardown()
			}
			slot.release()
			if !p.opts.KeepDirs {
				_ = os.RemoveAll(h.Dir)
			}
			err = fmt.Errorf("testbed: starting host %s: %w", id, err)
		}
	}()
	admin, err := lookupAdmin()
	if err != nil {
		return nil, err
	}
	if err := p.populateDir(ctx, h, admin, keys); err != nil {
		return nil, err
	}
	if h.net, err = createNetns(ctx, slot.n, slot.subnet, p.opts.Link.rate()); err != nil {
		return nil, err
	}
	h.Namespace = h.net.name
	if err := h.startSSHD(); err != nil {
		return nil, err
	}
	if err := h.waitReady(ctx); err != nil {
		return nil, err
	}
	if err := h.checkMounts(); err != nil {
		return nil, err
	}
	if slot.proxy != nil {
		slot.proxy.Release()
	}
	return h, nil
}

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

// Paths inside the host's mount namespace.
const (
	nsSSHDir     = standinState + "/sshd"
	nsSSHDConfig = nsSSHDir + "/sshd_config"
)

func sshdConfig(h *Host) string {
	return fmt.Sprintf(`# sshd of nixos-sd test bed host %s (paths are inside its mount namespace)
ListenAddress %s:22
HostKey %s/ssh_host_ed25519_key
PidFile %s/sshd.pid
AuthorizedKeysFile %s/.ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowUsers %s
PermitRootLogin no
StrictModes no
UseDNS no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
MaxStartups 64:30:128
MaxSessions 64
LogLevel VERBOSE
`, h.ID, h.NSAddr, nsSSHDir, nsSSHDir, hostHome, hostUser)
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

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sshdScript runs inside the host's namespaces: it bind-mounts the host's
// folders and checks them (a stand-in shutdown that is not in place could
// shut the real machine down) before it becomes sshd.
func (h *Host) sshdScript() string {
	var b strings.Builder
	b.WriteString("set -eu\n")
	for _, m := range h.bindMounts() {
		fmt.Fprintf(&b, "mount --bind %s %s\n", shellQuote(m[0]), m[1])
	}
	for _, m := range h.bindMounts() {
		fmt.Fprintf(&b, "mountpoint -q %s || { echo 'testbed: %s is not mounted; not starting sshd' >&2; exit 97; }\n", m[1], m[1])
	}
	b.WriteString("for f in shutdown poweroff halt reboot; do\n" +
		"  grep -q 'Stand-in for shutdown' \"/usr/local/sbin/$f\" || { echo \"testbed: /usr/local/sbin/$f is not the stand-in; not starting sshd\" >&2; exit 97; }\n" +
		"done\n")
	fmt.Fprintf(&b, "exec %s -D -e -f %s\n", sshdPath, nsSSHDConfig)
	return b.String()
}

func (h *Host) startSSHD() error {
	logFile, err := os.OpenFile(filepath.Join(h.Dir, "sshd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	h.logFile = logFile
	cmd := exec.Command("ip", "netns", "exec", h.net.name,
		"unshare", "--mount", "--propagation", "private",
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

// Stop ends host id: its delay proxy, every process in its namespace (sshd,
// sessions, builds), the namespace and veth pair, and its folder (unless
// KeepDirs). The stand-ins' records stay readable through the Host, and
// through Stopped(id). Stopping a host that is already stopped does nothing.
func (p *HostPool) Stop(id string) error {
	p.mu.Lock()
	h, ok := p.hosts[id]
	if !ok {
		_, wasStopped := p.stopped[id]
		p.mu.Unlock()
		if wasStopped {
			return nil
		}
		return fmt.Errorf("testbed: no host %s is running", id)
	}
	delete(p.hosts, id)
	p.stopped[id] = h
	p.mu.Unlock()
	return p.stopHost(h)
}

func (p *HostPool) stopHost(h *Host) error {
	if h.slot.proxy != nil {
		h.slot.proxy.Hold()
		_ = h.slot.proxy.Close()
	}
	err := h.teardown()
	if err == nil {
		// The interfaces are gone: the /30 may be used again.
		releaseSubnet(h.slot.subnet)
	}
	// Keep the records before the folder goes.
	shutdown, err1 := readLines(filepath.Join(h.Dir, "state", "shutdown.log"))
	standin, err2 := readLines(filepath.Join(h.Dir, "state", "standin-calls.log"))
	h.mu.Lock()
	h.stopped = true
	if err1 == nil {
		h.shutdown = shutdown
	}
	if err2 == nil {
		h.standin = standin
	}
	h.mu.Unlock()
	if !p.opts.KeepDirs {
		if rmErr := os.RemoveAll(h.Dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("testbed: removing %s: %w", h.Dir, rmErr))
		}
	}
	p.logf("testbed: host %s stopped", h.ID)
	if err != nil {
		return fmt.Errorf("testbed: stopping host %s: %w", h.ID, err)
	}
	return nil
}

// teardown kills everything in the namespace and deletes it.
func (h *Host) teardown() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	var errs []error
	if h.cmd != nil && h.cmd.Process != nil {
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
	}
	if h.net != nil {
		if err := h.net.killAll(ctx, 2*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if h.cmd != nil {
		select {
		case <-h.exited:
		case <-time.After(3 * time.Second):
			_ = h.cmd.Process.Kill()
			select {
			case <-h.exited:
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("sshd (pid %d) does not exit", h.cmd.Process.Pid))
			}
		}
	}
	if h.logFile != nil {
		_ = h.logFile.Close()
	}
	if h.net != nil {
		if err := h.net.delete(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

// Close stops every host and the pending delay proxy, and removes the
// hosts' folder when the pool made it.
func (p *HostPool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	hosts := make([]*Host, 0, len(p.hosts))
	for id, h := range p.hosts {
		hosts = append(hosts, h)
		p.stopped[id] = h
	}
	p.hosts = map[string]*Host{}
	pending := p.pending
	p.pending = nil
	p.mu.Unlock()

	var errs []error
	if pending != nil {
		pending.release()
	}
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.stopHost(h); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	if p.ownWorkDir && !p.opts.KeepDirs {
		if err := os.RemoveAll(p.workDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Host returns the running host id.
func (p *HostPool) Host(id string) (*Host, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.hosts[id]
	return h, ok
}

// Stopped returns host id after Stop (or Close) ended it, to read what its
// stand-ins recorded.
func (p *HostPool) Stopped(id string) (*Host, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.stopped[id]
	return h, ok
}

// Running lists the running hosts' ids, sorted.
func (p *HostPool) Running() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]string, 0, len(p.hosts))
	for id := range p.hosts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// WorkDir is the folder holding the hosts' folders.
func (p *HostPool) WorkDir() string { return p.workDir }

// ShutdownCalls returns what the stand-in shutdown, poweroff, halt and reboot
// recorded, one entry per call: the shell-quoted argv (as bash's printf %q
// writes it), e.g. "shutdown -h now".
func (h *Host) ShutdownCalls() ([]string, error) {
	return h.records("shutdown.log", func() []string { return h.shutdown })
}

// StandInCalls returns each stand-in nix or nix-build invocation's argv,
// shell-quoted as bash's printf %q writes it, e.g.
// "nix build -L --out-link /tmp/x/result --file default.nix".
func (h *Host) StandInCalls() ([]string, error) {
	return h.records("standin-calls.log", func() []string { return h.standin })
}

func (h *Host) records(name string, cached func() []string) ([]string, error) {
	h.mu.Lock()
	stopped, c := h.stopped, cached()
	h.mu.Unlock()
	if stopped {
		return append([]string(nil), c...), nil
	}
	lines, err := readLines(filepath.Join(h.Dir, "state", name))
	if err != nil {
		return nil, fmt.Errorf("testbed: host %s: reading %s: %w", h.ID, name, err)
	}
	return lines, nil
}

// SSHDLog returns the host's sshd log (sshd -e, LogLevel VERBOSE), for
// diagnostics; empty after Stop unless KeepDirs.
func (h *Host) SSHDLog() string {
	data, _ := os.ReadFile(filepath.Join(h.Dir, "sshd.log"))
	return string(data)
}
