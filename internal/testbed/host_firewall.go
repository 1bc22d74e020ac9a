package testbed

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
)

// A host plays its instance's network the way AWS does (host_firewall.go):
//
//   - Its instance's public and private addresses lead to it: this machine
//     routes each to the host's veth (public ones come from 198.18.0.0/15,
//     moto_launcher.py patch 6, which is unreachable otherwise).
//   - Its security groups decide what comes in, judged on the source address
//     AWS would see: nftables in the host's namespace rewrites the source of
//     a connection from this machine to the caller's public address
//     (CallerPublicIP, what the public IP server answers) when it went to the
//     instance's public address or to NSAddr (which tests use as ssh_host),
//     and to an address of the instance's subnet (VPCCallerIP, this machine
//     playing a machine inside the VPC) when it went to the private address.
//     This machine is inside the default VPCs only (joinDefaultVPC): a
//     connection to the private address of an instance in another VPC is
//     dropped, as AWS has no route for it. Traffic from another instance
//     keeps its private source address.
//   - Security groups are stateful: replies pass, as do connections the host
//     opened. Everything else is dropped, so a refused connection times out
//     as on AWS.
//   - Traffic the host sends to other instances leaves from its private
//     address; the hosts reach nothing but the test bed's instances
//     (policy routing table hostsTable, whose default is unreachable).
//
// The watcher applies the instance's groups when its host is up, before the
// instance turns running, and again whenever a group's rules change.

const (
	// publicNet is where moto_launcher.py takes instances' public addresses.
	publicNet = "198.18.0.0/15"
	// hostsTable routes what the hosts send: the instances' addresses only.
	hostsTable = "213"
	nftTable   = "nixos_sd_sg"
)

// SGRule is one ingress permission of a security group, resolved to source
// CIDRs (a source group becomes its members' private addresses).
type SGRule struct {
	// Protocol is "tcp", "udp", "icmp" or "-1" (all).
	Protocol string
	// FromPort and ToPort bound the ports (tcp, udp); -1 = all.
	FromPort, ToPort int
	CIDRs            []string
}

// HostNetwork is what a host's namespace makes of its instance.
type HostNetwork struct {
	PrivateIP string
	PublicIP  string // empty = none
	// CallerPublicIP is the source a connection from this machine to the
	// public address (or NSAddr) shows to the security groups.
	CallerPublicIP string
	// VPCCallerIP is the source a connection from this machine to the
	// private address shows; empty when this machine is outside the
	// instance's VPC, whose private addresses it then cannot reach.
	VPCCallerIP string
	Rules       []SGRule
}

const (
	// defaultVPCNet is the IPv4 block of every default VPC: AWS's (VPC user
	// guide, "Default VPCs") and moto's.
	defaultVPCNet = "172.31.0.0/16"
	// defaultVPCSubnet is the first default subnet, where this machine
	// plays its address.
	defaultVPCSubnet = "172.31.0.0/20"
)

// joinDefaultVPC makes this machine's routes say what the hosts' firewalls
// play: a machine inside the default VPC. Its address there (VPCCallerIP of
// the first default subnet) goes on lo, and the VPC's block is routed from
// it, so the kernel's source address toward the VPC is a VPC address, as on
// an instance of that VPC; the builder's check of a private ssh_interface
// (routeWarning) sees what it would see there. The instances' /32 routes are
// more specific; what goes to another VPC address is dropped (a local
// source arriving on lo is a martian). A machine that has an address in the
// block already (one in a default VPC) is left as it is. Like
// setupRouting's routes these stay: other test beds on the machine use
// them.
func joinDefaultVPC(ctx context.Context) error {
	_, block, _ := net.ParseCIDR(defaultVPCNet)
	mine, err := VPCCallerIP(defaultVPCSubnet)
	if err != nil {
		return err
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("testbed: listing this machine's addresses: %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && block.Contains(ipn.IP) && !ipn.IP.Equal(net.ParseIP(mine)) {
			return nil
		}
	}
	for _, args := range [][]string{
		{"addr", "replace", mine + "/32", "dev", "lo"},
		{"route", "replace", defaultVPCNet, "dev", "lo", "src", mine},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return fmt.Errorf("testbed: putting this machine in the default VPC (%s): %w", defaultVPCNet, err)
		}
	}
	return nil
}

// inDefaultVPC says whether a subnet's block is in the default VPC's, the
// one VPC this machine is inside.
func inDefaultVPC(subnetCIDR string) bool {
	_, block, _ := net.ParseCIDR(defaultVPCNet)
	ip, _, err := net.ParseCIDR(subnetCIDR)
	return err == nil && block.Contains(ip)
}

var routingSetup sync.Once
var routingErr error

// setupRouting lets this machine forward between the hosts' veths, and keeps
// publicNet and whatever the hosts send elsewhere on the machine.
func setupRouting(ctx context.Context) error {
	routingSetup.Do(func() {
		for _, args := range [][]string{
			{"sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
			{"ip", "route", "replace", "unreachable", publicNet},
			{"ip", "route", "replace", "unreachable", "default", "table", hostsTable},
		} {
			if err := run(ctx, args[0], args[1:]...); err != nil {
				routingErr = fmt.Errorf("testbed: setting up the hosts' routing: %w", err)
				return
			}
		}
	})
	return routingErr
}

// ApplyNetwork gives the host its instance's addresses (first call) and
// security group rules (every call; a call with the same rules does nothing).
func (h *Host) ApplyNetwork(ctx context.Context, n HostNetwork) error {
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("testbed: security groups need nft (Debian package nftables); run `make testbed-deps`")
	}
	ruleset, err := n.nftRuleset(h)
	if err != nil {
		return err
	}
	h.mu.Lock()
	same := h.firewall == ruleset
	first := h.netApplied == nil
	h.mu.Unlock()
	if same {
		return nil
	}
	if first {
		if err := h.addRoutes(ctx, n); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.net.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: host %s: applying its security groups: %v: %s\n%s", h.ID, err, out, ruleset)
	}
	h.mu.Lock()
	h.firewall = ruleset
	nn := n
	h.netApplied = &nn
	h.mu.Unlock()
	return nil
}

// Network is what ApplyNetwork last applied (false before the first call).
func (h *Host) Network() (HostNetwork, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.netApplied == nil {
		return HostNetwork{}, false
	}
	return *h.netApplied, true
}

func (h *Host) addRoutes(ctx context.Context, n HostNetwork) error {
	if err := setupRouting(ctx); err != nil {
		return err
	}
	via := h.net.subnet.nsSide()
	var steps [][]string
	for _, ip := range []string{n.PrivateIP, n.PublicIP} {
		if ip == "" {
			continue
		}
		steps = append(steps,
			[]string{"route", "add", ip + "/32", "via", via, "dev", h.net.hostIf},
			[]string{"route", "add", ip + "/32", "via", via, "dev", h.net.hostIf, "table", hostsTable})
	}
	// What the host sends is routed by hostsTable only.
	steps = append(steps, []string{"rule", "add", "iif", h.net.hostIf, "lookup", hostsTable, "priority", "1000"})
	// Replies to the rewritten sources, and the host's own traffic, go to
	// this machine, whose rule above keeps them among the instances.
	steps = append(steps, []string{"-n", h.net.name, "route", "add", "default", "via", h.net.subnet.hostSide()})
	for _, st := range steps {
		if err := run(ctx, "ip", st...); err != nil {
			return fmt.Errorf("testbed: host %s: routing its addresses: %w", h.ID, err)
		}
	}
	h.mu.Lock()
	h.ipRule = true
	h.mu.Unlock()
	return nil
}

// removeRule deletes the host's policy routing rule (its routes go with its
// veth).
func (h *Host) removeRule(ctx context.Context) error {
	h.mu.Lock()
	had := h.ipRule
	h.ipRule = false
	h.mu.Unlock()
	if !had || h.net == nil {
		return nil
	}
	return run(ctx, "ip", "rule", "del", "iif", h.net.hostIf, "lookup", hostsTable, "priority", "1000")
}

func (n HostNetwork) nftRuleset(h *Host) (string, error) {
	ips := []string{n.PrivateIP, n.CallerPublicIP}
	if n.VPCCallerIP != "" {
		ips = append(ips, n.VPCCallerIP)
	}
	for _, ip := range ips {
		if net.ParseIP(ip).To4() == nil {
			return "", fmt.Errorf("testbed: host %s: %q is not an IPv4 address", h.ID, ip)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {}\ndelete table ip %s\ntable ip %s {\n", nftTable, nftTable, nftTable)
	b.WriteString("  chain pre {\n    type nat hook prerouting priority -100; policy accept;\n")
	if n.PublicIP != "" {
		fmt.Fprintf(&b, "    ip daddr %s ct mark set 1 dnat to %s\n", n.PublicIP, h.NSAddr)
	}
	fmt.Fprintf(&b, "    ip daddr %s ct mark set 2 dnat to %s\n", n.PrivateIP, h.NSAddr)
	fmt.Fprintf(&b, "    ip daddr %s ct mark set 1\n  }\n", h.NSAddr)
	b.WriteString("  chain in_nat {\n    type nat hook input priority 100; policy accept;\n")
	fmt.Fprintf(&b, "    ct mark 1 ip saddr %s snat to %s\n", hostsNet, n.CallerPublicIP)
	if n.VPCCallerIP != "" {
		fmt.Fprintf(&b, "    ct mark 2 ip saddr %s snat to %s\n", hostsNet, n.VPCCallerIP)
	}
	b.WriteString("  }\n")
	b.WriteString("  chain out_nat {\n    type nat hook postrouting priority 100; policy accept;\n")
	fmt.Fprintf(&b, "    oifname %q ip daddr != %s snat to %s\n  }\n", h.net.nsIf, hostsNet, n.PrivateIP)
	// After in_nat (priority 100): the filter sees the rewritten source.
	b.WriteString("  chain sg {\n    type filter hook input priority 200; policy drop;\n")
	b.WriteString("    ct state established,related accept\n    iifname \"lo\" accept\n")
	if n.VPCCallerIP == "" {
		// This machine is outside the VPC: its private address is out of reach.
		fmt.Fprintf(&b, "    ct mark 2 ip saddr %s drop\n", hostsNet)
	}
	for _, r := range n.Rules {
		line, err := r.nft()
		if err != nil {
			return "", fmt.Errorf("testbed: host %s: %w", h.ID, err)
		}
		if line != "" {
			fmt.Fprintf(&b, "    %s\n", line)
		}
	}
	b.WriteString("  }\n}\n")
	return b.String(), nil
}

func (r SGRule) nft() (string, error) {
	var cidrs []string
	for _, c := range r.CIDRs {
		if _, _, err := net.ParseCIDR(c); err != nil || strings.Contains(c, ":") {
			continue // IPv6 ranges never match the hosts' IPv4 traffic
		}
		cidrs = append(cidrs, c)
	}
	if len(cidrs) == 0 {
		return "", nil
	}
	sort.Strings(cidrs)
	cidrs = slices.Compact(cidrs)
	src := fmt.Sprintf("ip saddr { %s }", strings.Join(cidrs, ", "))
	ports := ""
	if r.FromPort >= 0 && r.ToPort >= 0 && !(r.FromPort == 0 && r.ToPort == 65535) {
		if r.FromPort == r.ToPort {
			ports = fmt.Sprintf(" dport %d", r.FromPort)
		} else {
			ports = fmt.Sprintf(" dport %d-%d", r.FromPort, r.ToPort)
		}
	}
	switch strings.ToLower(r.Protocol) {
	case "-1", "all":
		return src + " accept", nil
	case "tcp", "6":
		return src + " tcp" + orAll(ports, " dport 0-65535") + " accept", nil
	case "udp", "17":
		return src + " udp" + orAll(ports, " dport 0-65535") + " accept", nil
	case "icmp", "1":
		return src + " ip protocol icmp accept", nil
	}
	return "", fmt.Errorf("security group protocol %q is not supported by the test bed", r.Protocol)
}

func orAll(ports, all string) string {
	if ports == "" {
		return all
	}
	return ports
}

// VPCCallerIP is the address the test bed plays "a machine inside the VPC"
// from when it connects to an instance's private address: the last usable
// address of the instance's subnet (AWS reserves the one after).
func VPCCallerIP(subnetCIDR string) (string, error) {
	_, n, err := net.ParseCIDR(subnetCIDR)
	if err != nil || n.IP.To4() == nil {
		return "", fmt.Errorf("testbed: subnet CIDR %q: %v", subnetCIDR, err)
	}
	ip := n.IP.To4()
	ones, _ := n.Mask.Size()
	v := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
	v |= (1<<(32-ones) - 1)
	v--
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).String(), nil
}

// writeHostsFile writes this machine's /etc/hosts followed by the instances'
// names, in place.
func writeHostsFile(path string, entries map[string][]string) error {
	base, _ := os.ReadFile("/etc/hosts")
	var b strings.Builder
	b.Write(base)
	if len(base) > 0 && base[len(base)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteString("# nixos-sd test bed: the instances' DNS names\n")
	ids := make([]string, 0, len(entries))
	for id := range entries {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		for _, l := range entries[id] {
			b.WriteString(l + "\n")
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
