package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
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
	// DebianSuite is the Debian release the hosts run: "trixie" (the
	// default) or "bookworm", whose nix-bin (Nix 2.8) is older than current
	// nixpkgs requires.
	DebianSuite string
	// DebianArch is the architecture of the hosts' Debian root: "" (this
	// machine's), or "arm64", whose programs the kernel runs through
	// binfmt_misc and qemu-user-static (binfmt.go): uname -m and Nix say
	// aarch64 as on a Graviton instance, with no stand-in making them, and
	// everything on the host runs emulated (slowly). Only the trixie root
	// is built for arm64 (scripts/testbed-deps.sh).
	DebianArch string
	// KeepDirs keeps each host's folder (sshd.log, state/ with the stand-ins'
	// logs and images) after Stop, for post-mortems.
	KeepDirs bool
	// GatewayNames resolve on every host (its /etc/hosts) to its gateway,
	// this machine: the names of services the test bed plays (S3).
	GatewayNames []string
	// Logf receives progress lines; nil = none.
	Logf func(format string, args ...any)
}

// HostPool starts and stops hosts. Its methods are safe for concurrent use.
type HostPool struct {
	opts HostPoolOptions
	root debianRoot
	// emulator is the binfmt_misc interpreter that runs an arm64 root's
	// programs; empty for this machine's own.
	emulator   string
	logf       func(string, ...any)
	workDir    string
	ownWorkDir bool

	mu       sync.Mutex
	closed   bool
	hosts    map[string]*Host
	stopped  map[string]*Host
	starting map[string]bool
	pending  *hostSlot // the next host's slot

	// impostor: hosts started from now on serve a host key of their own
	// instead of the one their user data gives (SetImpostor).
	impostor bool

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

// NewHostPool checks the machine (tools, the built Debian root; routes
// the hosts' range nowhere else) and returns a pool with no hosts. It needs
// root.
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
	emulator, err := rootEmulator(opts)
	if err != nil {
		return nil, err
	}
	root, err := findDebianRoot(opts.DebianSuite, opts.DebianArch)
	if err != nil {
		return nil, err
	}
	p := &HostPool{
		root:     root,
		emulator: emulator,
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
		dp.SetWindow(p.opts.Link.window())
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
	return p.start(ctx, id, authorizedKeys, nil)
}

// StartInstance is Start for an EC2 instance: keyPairKeys are its key pair's
// (what cloud-init reads from the metadata service), and the cloud-init
// stand-in (cloudinit.go) plays its user data: authorized keys and host keys
// before sshd starts, runcmd once it is up. User data the stand-in cannot
// play fails the start.
func (p *HostPool) StartInstance(ctx context.Context, id string, keyPairKeys []string, userData []byte) (*Host, error) {
	cc, err := parseUserData(userData)
	if err != nil {
		return nil, fmt.Errorf("testbed: host %s: its user data: %w", id, err)
	}
	if cc == nil {
		cc = &cloudConfig{DeleteKeys: true, GenKeyTypes: hostKeyTypes}
	}
	for _, w := range cc.Warnings {
		p.logf("testbed: host %s: cloud-init: %s", id, w)
	}
	keys := append(append([]string(nil), keyPairKeys...), cc.AuthorizedKeys...)
	return p.start(ctx, id, keys, cc)
}

func (p *HostPool) start(ctx context.Context, id string, authorizedKeys []string, boot *cloudConfig) (*Host, error) {
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
	h, err := p.create(ctx, id, slot, authorizedKeys, boot)
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
func (p *HostPool) create(ctx context.Context, id string, slot *hostSlot, keys []string, boot *cloudConfig) (_ *Host, err error) {
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
			_ = h.unmountTmp()
			slot.release()
			if !p.opts.KeepDirs {
				_ = os.RemoveAll(h.Dir)
			}
			err = fmt.Errorf("testbed: starting host %s: %w", id, err)
		}
	}()
	if err := p.populateDir(ctx, h, p.root, keys); err != nil {
		return nil, err
	}
	if boot != nil {
		if err := boot.applySSH(ctx, filepath.Join(h.Dir, "state", "sshd")); err != nil {
			return nil, fmt.Errorf("cloud-init: %w", err)
		}
	}
	p.mu.Lock()
	impostor := p.impostor
	p.mu.Unlock()
	if impostor {
		if err := impersonate(ctx, filepath.Join(h.Dir, "state", "sshd")); err != nil {
			return nil, err
		}
		p.logf("testbed: host %s: an impostor's sshd answers at its address", id)
	}
	if h.net, err = createNetns(ctx, slot.n, slot.subnet, p.opts.Link.rate()); err != nil {
		return nil, err
	}
	h.Namespace = h.net.name
	if len(p.opts.GatewayNames) > 0 {
		if err := appendFile(filepath.Join(h.Dir, "upper", "etc", "hosts"), h.net.subnet.hostSide()+" "+strings.Join(p.opts.GatewayNames, " ")+"\n"); err != nil {
			return nil, err
		}
	}
	if err := h.startSSHD(); err != nil {
		return nil, err
	}
	if err := h.waitReady(ctx); err != nil {
		return nil, err
	}
	if err := h.checkMounts(); err != nil {
		return nil, err
	}
	if p.emulator != "" {
		if err := h.checkEmulated(p.emulator); err != nil {
			return nil, err
		}
	}
	if p.opts.StandIn.Arch == "x86_64-binfmt" {
		if err := h.preinstallNix(ctx); err != nil {
			return nil, err
		}
	}
	if err := h.holdDpkgLock(dpkgLockHold); err != nil {
		return nil, err
	}
	if boot != nil {
		if err := h.runFinal(boot); err != nil {
			return nil, fmt.Errorf("cloud-init: %w", err)
		}
	}
	if slot.proxy != nil {
		slot.proxy.Release()
	}
	return h, nil
}

// SetImpostor makes the hosts started from now on (until SetImpostor(false))
// impostors: another machine's sshd, with a host key of its own, answers at
// the instance's address.
func (p *HostPool) SetImpostor(on bool) {
	p.mu.Lock()
	p.impostor = on
	p.mu.Unlock()
}

// impersonate replaces every host key in sshDir with a new ed25519 key.
func impersonate(ctx context.Context, sshDir string) error {
	old, err := filepath.Glob(filepath.Join(sshDir, "ssh_host_*"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	if err := run(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "impostor", "-f", filepath.Join(sshDir, "ssh_host_ed25519_key")); err != nil {
		return fmt.Errorf("making the impostor's host key: %w", err)
	}
	return nil
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

func appendFile(name, line string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
