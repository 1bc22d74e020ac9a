package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The hosts' addresses: one /30 per host out of 10.213.0.0/16, which the test
// bed uses for its own namespaces only. Slot i of a pool is the /30 at
// index (base+i) mod 16384; the base depends on the process id so that two
// test processes running at once do not collide, and a /30 already on one
// of this machine's interfaces is skipped.
const (
	subnetCount   = 1 << 14 // /30s in a /16
	slotsPerBlock = 256
)

// subnet is a host's /30: the root namespace end is .1, the host .2.
type subnet struct {
	index int
}

func (s subnet) base() [4]byte {
	n := s.index * 4
	return [4]byte{10, 213, byte(n >> 8), byte(n & 0xff)}
}

func (s subnet) hostSide() string {
	b := s.base()
	return net.IPv4(b[0], b[1], b[2], b[3]+1).String()
}

func (s subnet) nsSide() string {
	b := s.base()
	return net.IPv4(b[0], b[1], b[2], b[3]+2).String()
}

func (s subnet) contains(ip net.IP) bool {
	ip4 := ip.To4()
	if ip4 == nil {
		return false
	}
	b := s.base()
	return ip4[0] == b[0] && ip4[1] == b[1] && ip4[2] == b[2] && ip4[3]&^3 == b[3]
}

// subnetInUse reports whether any address of this machine's interfaces (in
// the root namespace) falls in s.
func subnetInUse(s subnet) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && s.contains(ipn.IP) {
			return true
		}
	}
	return false
}

// run runs a command and returns an error with its output when it fails.
func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

// output runs a command and returns its standard output; the error carries
// standard error.
func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

func netnsExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// netnsNames picks a namespace name and veth names for slot n of this
// process that nothing on the machine uses yet: nsd<pid%1000>-<n>, with a
// letter appended when a leftover of an earlier process has the name.
// Interface names stay within Linux's 15 characters.
func netnsNames(n int) (ns, hostIf, nsIf string, err error) {
	tag := fmt.Sprintf("%d-%d", os.Getpid()%1000, n)
	for _, suffix := range []string{"", "a", "b", "c", "d", "e", "f", "g", "h"} {
		t := tag + suffix
		ns, hostIf, nsIf = "nsd"+t, "vh"+t, "vn"+t
		if len(hostIf) > 15 {
			return "", "", "", fmt.Errorf("testbed: interface name %s is too long; too many hosts in one process", hostIf)
		}
		if !netnsExists(ns) && !linkExists(hostIf) {
			return ns, hostIf, nsIf, nil
		}
	}
	return "", "", "", fmt.Errorf("testbed: namespace names nsd%s* are all taken; delete stale ones with `ip netns del`", tag)
}

// netns is a host's network: a namespace and a veth pair to the root
// namespace with a /30.
type netns struct {
	name   string
	hostIf string
	nsIf   string
	subnet subnet
}

// createNetns creates the namespace, the veth pair and the addresses, and
// caps the rate when rateMbit > 0. On failure nothing is left behind.
func createNetns(ctx context.Context, n int, s subnet, rateMbit float64) (_ *netns, err error) {
	name, hostIf, nsIf, err := netnsNames(n)
	if err != nil {
		return nil, err
	}
	nn := &netns{name: name, hostIf: hostIf, nsIf: nsIf, subnet: s}
	if err := run(ctx, "ip", "netns", "add", name); err != nil {
		return nil, fmt.Errorf("testbed: creating network namespace %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			nn.delete(context.WithoutCancel(ctx))
		}
	}()
	steps := [][]string{
		{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", name},
		{"addr", "add", s.hostSide() + "/30", "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"-n", name, "addr", "add", s.nsSide() + "/30", "dev", nsIf},
		{"-n", name, "link", "set", nsIf, "up"},
		{"-n", name, "link", "set", "lo", "up"},
	}
	for _, st := range steps {
		if err := run(ctx, "ip", st...); err != nil {
			return nil, fmt.Errorf("testbed: setting up the network of %s: %w", name, err)
		}
	}
	if err := shapeVeth(ctx, name, hostIf, nsIf, rateMbit); err != nil {
		return nil, err
	}
	return nn, nil
}

// pids lists the processes in the namespace.
func (nn *netns) pids(ctx context.Context) ([]int, error) {
	out, err := output(ctx, "ip", "netns", "pids", nn.name)
	if err != nil {
		if !netnsExists(nn.name) {
			return nil, nil
		}
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killAll ends every process in the namespace: SIGTERM, then SIGKILL for
// those still there after grace.
func (nn *netns) killAll(ctx context.Context, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	sig := syscall.SIGTERM
	for attempt := 0; ; attempt++ {
		pids, err := nn.pids(ctx)
		if err != nil {
			return fmt.Errorf("testbed: listing the processes of %s: %w", nn.name, err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if sig == syscall.SIGKILL && time.Now().After(deadline.Add(5*time.Second)) {
				return fmt.Errorf("testbed: processes %v in %s survive SIGKILL", pids, nn.name)
			}
			sig = syscall.SIGKILL
		}
		if attempt == 0 || sig == syscall.SIGKILL {
			for _, pid := range pids {
				_ = syscall.Kill(pid, sig)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// delete removes the namespace (which takes its veth end, and so the pair,
// with it) and the root namespace end if it is still there.
func (nn *netns) delete(ctx context.Context) error {
	var errs []error
	if netnsExists(nn.name) {
		if err := run(ctx, "ip", "netns", "del", nn.name); err != nil {
			errs = append(errs, fmt.Errorf("testbed: deleting network namespace %s: %w", nn.name, err))
		}
	}
	// The kernel frees the pair asynchronously after the namespace goes.
	for i := 0; i < 40 && linkExists(nn.hostIf); i++ {
		if i == 10 {
			if err := run(ctx, "ip", "link", "del", nn.hostIf); err != nil && linkExists(nn.hostIf) {
				errs = append(errs, fmt.Errorf("testbed: deleting interface %s: %w", nn.hostIf, err))
				break
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return errors.Join(errs...)
}
