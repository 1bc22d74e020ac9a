package testbed

import (
	"math"
	"net"
	"strings"
	"testing"
	"time"
)

func TestSubnetAddresses(t *testing.T) {
	for _, c := range []struct {
		index            int
		hostSide, nsSide string
	}{
		{1, "10.213.0.5", "10.213.0.6"},
		{64, "10.213.1.1", "10.213.1.2"},
		{subnetCount - 1, "10.213.255.253", "10.213.255.254"},
	} {
		s := subnet{index: c.index}
		if s.hostSide() != c.hostSide || s.nsSide() != c.nsSide {
			t.Errorf("subnet %d: %s/%s, want %s/%s", c.index, s.hostSide(), s.nsSide(), c.hostSide, c.nsSide)
		}
		if !s.contains(net.ParseIP(c.nsSide)) || s.contains(net.ParseIP("10.213.0.2")) && c.index != 0 {
			t.Errorf("subnet %d: contains is wrong", c.index)
		}
	}
}

func TestReserveSlotIsSequentialAndExclusive(t *testing.T) {
	n1, s1, err := reserveSlot()
	if err != nil {
		t.Fatal(err)
	}
	n2, s2, err := reserveSlot()
	if err != nil {
		t.Fatal(err)
	}
	defer releaseSubnet(s1)
	defer releaseSubnet(s2)
	if n2 != n1+1 || s1 == s2 || s1.index == 0 || s2.index == 0 {
		t.Errorf("slots %d %v then %d %v", n1, s1, n2, s2)
	}
}

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{
		"i-0123456789abcdef0":   "i-0123456789abcdef0",
		"../../etc":             "_.._etc",
		"a b/c":                 "a_b_c",
		"":                      "host",
		strings.Repeat("x", 99): strings.Repeat("x", 48),
	} {
		if got := safeName(in); got != want {
			t.Errorf("safeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAuthorizedKeysFile(t *testing.T) {
	got := authorizedKeysFile([]string{"ssh-ed25519 AAAA one", "  \n# comment\nssh-rsa BBBB two\n", ""})
	if want := "ssh-ed25519 AAAA one\nssh-rsa BBBB two\n"; got != want {
		t.Errorf("authorized_keys %q, want %q", got, want)
	}
}

func TestSSHDScriptMountsBeforeSSHD(t *testing.T) {
	h := &Host{ID: "i-1", Dir: "/tmp/it's here/i-1-0", NSAddr: "10.213.0.6"}
	s := h.sshdScript()
	if !strings.HasPrefix(s, "set -eu\n") {
		t.Errorf("script does not stop at the first failure:\n%s", s)
	}
	exec := strings.Index(s, "exec chroot \"$r\" /usr/sbin/sshd -D -e\n")
	if exec < 0 || strings.Count(s, "exec ") != 1 {
		t.Fatalf("no single exec of sshd in the root:\n%s", s)
	}
	overlay := strings.Index(s, "mount -t overlay overlay -o ")
	if overlay < 0 || overlay > exec {
		t.Errorf("the root's overlay is not mounted before sshd:\n%s", s)
	}
	var last int
	for _, target := range []string{hostHome, hostStandInDir, "/usr/local/sbin", standinState, "/tmp", "/proc", "/dev", "/run"} {
		i := strings.Index(s, "\"$r\""+target+"\n")
		if i < 0 {
			i = strings.Index(s, "\"$r"+target+"\"\n")
		}
		if i < 0 || i > exec || i < last || i < overlay {
			t.Errorf("mount of %s missing, out of order or after sshd:\n%s", target, s)
		}
		last = i
	}
	for _, target := range []string{hostHome, hostStandInDir, "/usr/local/sbin", standinState, "/tmp"} {
		if !strings.Contains(s, "mountpoint -q \"$r\""+target+" ||") {
			t.Errorf("no check that %s is mounted", target)
		}
	}
	if !strings.Contains(s, `'/tmp/it'\''s here/i-1-0/home'`) {
		t.Errorf("source paths are not shell-quoted:\n%s", s)
	}
	if strings.Index(s, "Stand-in for shutdown") > exec {
		t.Errorf("the stand-in shutdown is checked after sshd starts")
	}
	if !strings.Contains(s, "echo ip-10-213-0-6 >/proc/sys/kernel/hostname\n") {
		t.Errorf("the host is not named as EC2 names it:\n%s", s)
	}
	cfg := sshdConfig(h)
	for _, want := range []string{"HostKey " + nsSSHDir + "/ssh_host_ed25519_key\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("the sshd_config drop-in lacks %q", want)
		}
	}
	// Debian's own sshd_config decides the rest: PAM, passwords, root login.
	for _, lenient := range []string{"UsePAM", "StrictModes", "AllowUsers", "PasswordAuthentication", "MaxSessions", "MaxStartups"} {
		if strings.Contains(cfg, lenient) {
			t.Errorf("the drop-in overrides Debian's %s", lenient)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	if got := unescapeMountinfo(`/tmp/a\040b\134c`); got != `/tmp/a b\c` {
		t.Errorf("got %q", got)
	}
}

func TestLinkProfileValidate(t *testing.T) {
	var nilLink *LinkProfile
	for _, l := range []*LinkProfile{nilLink, {}, {RateMbit: 20, RTT: 100 * time.Millisecond}} {
		if err := l.validate(); err != nil {
			t.Errorf("%+v: %v", l, err)
		}
	}
	for _, l := range []*LinkProfile{{RateMbit: -1}, {RateMbit: math.NaN()}, {RateMbit: math.Inf(1)}, {RateMbit: 0.001}, {RTT: -time.Second}} {
		if err := l.validate(); err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
	if nilLink.rate() != 0 || nilLink.rtt() != 0 {
		t.Error("a nil profile shapes")
	}
}

func TestTBFArgs(t *testing.T) {
	got := strings.Join(tbfArgs(16), " ")
	if want := "tbf rate 16000kbit burst 32768 latency 100ms"; got != want {
		t.Errorf("tbfArgs(16) = %q, want %q", got, want)
	}
	got = strings.Join(tbfArgs(1000), " ")
	if want := "tbf rate 1000000kbit burst 1250000 latency 100ms"; got != want {
		t.Errorf("tbfArgs(1000) = %q, want %q", got, want)
	}
}

func TestStandInOptions(t *testing.T) {
	if got := (StandInOptions{}).conf(); got != "IMAGE_MIB=64\nCOMPRESS=1\n" {
		t.Errorf("default conf %q", got)
	}
	if got := (StandInOptions{ImageMiB: 128, Uncompressed: true}).conf(); got != "IMAGE_MIB=128\nCOMPRESS=0\n" {
		t.Errorf("conf %q", got)
	}
	if got := (StandInOptions{BuildInputs: true}).conf(); got != "IMAGE_MIB=64\nCOMPRESS=1\nBUILD_INPUTS=1\n" {
		t.Errorf("conf %q", got)
	}
	if got := (StandInOptions{Arch: "x86_64"}).conf(); got != "IMAGE_MIB=64\nCOMPRESS=1\nARCH=x86_64\n" {
		t.Errorf("conf %q", got)
	}
	if err := (StandInOptions{Arch: "arm64"}).validate(); err == nil {
		t.Error("an unknown Arch accepted")
	}
	if err := (StandInOptions{ImageMiB: 40}).validate(); err == nil {
		t.Error("a 40 MiB image accepted")
	}
}

// TestFirewallPrivateAddressFromOutsideTheVPC: this machine is inside the
// default VPC only; the private address of an instance in another VPC is
// out of its reach, as AWS has no route for it.
func TestFirewallPrivateAddressFromOutsideTheVPC(t *testing.T) {
	if !inDefaultVPC("172.31.16.0/20") || inDefaultVPC("10.77.0.0/24") || inDefaultVPC("bad") {
		t.Error("inDefaultVPC is wrong")
	}
	h := &Host{ID: "i-1", NSAddr: "10.213.0.6", net: &netns{nsIf: "vn1"}}
	n := HostNetwork{PrivateIP: "172.31.3.4", CallerPublicIP: "203.0.113.7", VPCCallerIP: "172.31.15.254"}
	inside, err := n.nftRuleset(h)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(inside, "ct mark 2 ip saddr 10.213.0.0/16 snat to 172.31.15.254") || strings.Contains(inside, "drop\n") {
		t.Errorf("inside the VPC:\n%s", inside)
	}
	n.PrivateIP, n.VPCCallerIP = "10.77.0.9", ""
	outside, err := n.nftRuleset(h)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(outside, "ct mark 2 ip saddr 10.213.0.0/16 snat") || !strings.Contains(outside, "ct mark 2 ip saddr 10.213.0.0/16 drop") {
		t.Errorf("outside the VPC:\n%s", outside)
	}
}
