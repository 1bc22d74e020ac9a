package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// Host is a running stand-in instance: a network namespace whose sshd runs
// chrooted in a private overlay of the Debian 13 root (user admin as
// cloud-init makes it, no Nix until apt-get installs nix-bin from the local
// mirror; then the stand-in nix fronts the real one), with stand-in
// shutdown/poweroff/halt/reboot in /usr/local/sbin, a private tmpfs /tmp,
// /home/admin and /var/lib/nixos-sd-standin bind-mounted from Dir, in mount
// and UTS namespaces of its own.
type Host struct {
	// ID is the id Start was given (the instance id).
	ID string
	// Addr and Port are where the host answers SSH: the delay proxy on
	// 127.0.0.1 when the link has an RTT, else NSAddr port 22.
	Addr string
	Port int
	// Dir is the host's folder: rootfs/, upper/, home/, bin/, sbin/, localbin/, state/,
	// tmp/, sshd.log (see populateDir).
	Dir string
	// Namespace is the network namespace's name (ip netns).
	Namespace string
	// NSAddr is the host's own address in its namespace, where sshd listens
	// on port 22.
	NSAddr string
	// Emulator is the program the kernel runs the host's sshd with, read from
	// its /proc/PID/exe, when the host's root is of another architecture
	// (HostPoolOptions.DebianArch): the binfmt_misc interpreter
	// (qemu-user-static). Empty on this machine's own root.
	Emulator string

	pool    *HostPool
	net     *netns
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	slot    *hostSlot
	logFile *os.File
	// tmpfs is where the host's /tmp tmpfs is mounted, empty when it is not.
	tmpfs string

	mu       sync.Mutex
	stopped  bool
	shutdown []string // cached at Stop
	standin  []string // cached at Stop
	machine  []string // cached at Stop
	inputs   []string // cached at Stop
	// The instance's network (host_firewall.go): the nftables ruleset last
	// applied, what it was made from, and whether the policy routing rule is in.
	firewall   string
	netApplied *HostNetwork
	ipRule     bool
}

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

// MachineRecords returns, on a host of another architecture's root, one line
// per build the stand-in nix faked, of what the real programs said in the
// build's environment just before: "uname=PATH:MACHINE system=SYSTEM
// currentSystem=CURRENT", where PATH is the uname on the build's PATH,
// MACHINE its -m, SYSTEM the real Nix's `system` setting and CURRENT its
// builtins.currentSystem. Hosts of this machine's root keep none.
func (h *Host) MachineRecords() ([]string, error) {
	return h.records("standin-machine.log", func() []string { return h.machine })
}

// FlakeInputRecords returns, per build or evaluation of a flake the host
// cannot fetch, the nixpkgs revision the stand-in nix locked its input to:
// "build REF nixpkgs REV" (or "eval ..."), REF as the command line named
// the flake.
func (h *Host) FlakeInputRecords() ([]string, error) {
	return h.records("standin-flake-inputs.log", func() []string { return h.inputs })
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
