//go:build e2e

package testbed

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Run as root: go test -tags e2e ./internal/testbed/ -run Host -v

func newTestPool(t *testing.T, opts HostPoolOptions) *HostPool {
	t.Helper()
	if opts.WorkDir == "" {
		opts.WorkDir = t.TempDir()
	}
	opts.Logf = t.Logf
	p, err := NewHostPool(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("closing the pool: %v", err)
		}
	})
	return p
}

func newKey(t *testing.T) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " test@nixos-sd"
}

func startHost(t *testing.T, p *HostPool, id string, keys ...string) *Host {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := p.Start(ctx, id, keys)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func dialSSH(addr string, port int, signer ssh.Signer) (*ssh.Client, error) {
	return ssh.Dial("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), &ssh.ClientConfig{
		User:            "admin",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
}

func mustDial(t *testing.T, addr string, port int, signer ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := dialSSH(addr, port, signer)
	if err != nil {
		t.Fatalf("ssh admin@%s:%d: %v", addr, port, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sshRun runs cmd and returns its stdout and stderr.
func sshRun(c *ssh.Client, cmd string) (string, string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", "", err
	}
	defer s.Close()
	var stdout, stderr bytes.Buffer
	s.Stdout, s.Stderr = &stdout, &stderr
	err = s.Run(cmd)
	return stdout.String(), stderr.String(), err
}

func mustRun(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	out, errOut, err := sshRun(c, cmd)
	if err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", cmd, err, out, errOut)
	}
	return out
}

func TestHostSSHSudoAndStandIns(t *testing.T) {
	p := newTestPool(t, HostPoolOptions{})
	signer, pub := newKey(t)
	other, _ := newKey(t)

	wantAddr, wantPort := p.NextEndpoint()
	if a, pt := p.NextEndpoint(); a != wantAddr || pt != wantPort {
		t.Fatalf("NextEndpoint changed without a Start: %s:%d then %s:%d", wantAddr, wantPort, a, pt)
	}
	h := startHost(t, p, "i-0123456789abcdef0", pub)
	if h.Addr != wantAddr || h.Port != wantPort || h.Port != 22 || h.Addr != h.NSAddr {
		t.Fatalf("host at %s:%d (namespace address %s), NextEndpoint said %s:%d", h.Addr, h.Port, h.NSAddr, wantAddr, wantPort)
	}
	if a, _ := p.NextEndpoint(); a == h.Addr {
		t.Fatalf("NextEndpoint still %s after Start", a)
	}
	if got := p.Running(); !slices.Equal(got, []string{h.ID}) {
		t.Fatalf("Running() = %v", got)
	}
	if got, ok := p.Host(h.ID); !ok || got != h {
		t.Fatalf("Host(%s) = %v, %v", h.ID, got, ok)
	}

	if _, err := dialSSH(h.Addr, h.Port, other); err == nil {
		t.Fatal("a key not in authorized_keys logged in")
	}
	c := mustDial(t, h.Addr, h.Port, signer)
	// Right after boot, dpkg is locked (unattended-upgrades on an instance):
	// apt fails at once unless it waits.
	if _, stderr, err := sshRun(c, "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q hello"); err == nil || !strings.Contains(stderr, "Could not get lock /var/lib/dpkg/lock-frontend") {
		t.Errorf("apt-get install right after boot: %v, %q; want the dpkg lock held", err, stderr)
	}
	// apt installs no recommended packages.
	if got := strings.TrimSpace(mustRun(t, c, "apt-config dump APT::Install-Recommends")); got != `APT::Install-Recommends "0";` {
		t.Errorf("apt's Install-Recommends: %q", got)
	}

	if got := strings.TrimSpace(mustRun(t, c, "id -un")); got != "admin" {
		t.Errorf("id -un = %q", got)
	}
	if got := strings.TrimSpace(mustRun(t, c, "echo $HOME; echo $SHELL")); got != "/home/admin\n/bin/bash" {
		t.Errorf("home and shell = %q", got)
	}
	mustRun(t, c, "sudo -n true")
	if got := strings.TrimSpace(mustRun(t, c, "sudo -n id -u")); got != "0" {
		t.Errorf("sudo -n id -u = %q", got)
	}
	// A Debian 13 cloud instance: admin as cloud-init makes it, no Nix yet.
	if got := strings.TrimSpace(mustRun(t, c, "cat /etc/debian_version; hostname; id -Gn")); !strings.HasPrefix(got, "13.") ||
		!strings.Contains(got, "\n"+"ip-"+strings.ReplaceAll(h.NSAddr, ".", "-")+"\n") || !strings.Contains(got, " sudo ") {
		t.Errorf("release, host name and admin's groups: %q", got)
	}
	if got := mustRun(t, c, "sudo -n cat /etc/sudoers.d/90-cloud-init-users"); !strings.Contains(got, "\nadmin ALL=(ALL) NOPASSWD:ALL\n") {
		t.Errorf("sudoers rule: %q", got)
	}
	if got := strings.TrimSpace(mustRun(t, c, "sudo -n grep '^admin:' /etc/shadow | cut -d: -f2")); !strings.HasPrefix(got, "!") {
		t.Errorf("admin's password is not locked as cloud-init locks it: %q", got)
	}
	if out, _, err := sshRun(c, "command -v nix"); err == nil {
		t.Fatalf("nix is installed before apt-get installs it: %s", out)
	}
	// apt-get installs the real nix-bin from the local mirror, under
	// Debian's signed index, once the lock is free; the stand-in nix then
	// fronts it.
	mustRun(t, c, "sudo -n apt-get update -q && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=60 nix-bin nix-setup-systemd")
	if got := strings.TrimSpace(mustRun(t, c, "command -v nix; readlink /usr/bin/nix; nix --version; nix-build --version")); got !=
		"/usr/bin/nix\n"+hostStandInDir+"/nix\nnix (Nix) 2.26.3\nnix-build (Nix) 2.26.3" {
		t.Errorf("nix after apt-get install nix-bin: %q", got)
	}
	// nix-setup-systemd's daemon listens, in a folder only root and
	// nix-users may enter.
	if got := strings.TrimSpace(mustRun(t, c, "sudo -n stat -c '%U:%G %a' /nix/var/nix/daemon-socket; sudo -n test -S /nix/var/nix/daemon-socket/socket && echo listening")); got !=
		"root:nix-users 770\nlistening" {
		t.Errorf("nix-daemon socket: %q", got)
	}
	if out, _, err := sshRun(c, "test -S /nix/var/nix/daemon-socket/socket"); err == nil {
		t.Errorf("admin sees the daemon's socket without being in nix-users: %s", out)
	}
	if got := strings.TrimSpace(mustRun(t, c, "sudo -n sh -c 'command -v shutdown'")); got != "/usr/local/sbin/shutdown" {
		t.Errorf("shutdown under sudo is %q", got)
	}

	// shutdown only records.
	mustRun(t, c, "sudo shutdown -h now")
	mustRun(t, c, "sudo -n poweroff")
	calls, err := h.ShutdownCalls()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"shutdown -h now", "poweroff"}; !slices.Equal(calls, want) {
		t.Errorf("ShutdownCalls() = %q, want %q", calls, want)
	}
	mustRun(t, c, "true") // still up

	// /tmp is the host's own.
	marker := fmt.Sprintf("nixos-sd-marker-%d", time.Now().UnixNano())
	mustRun(t, c, "echo hello > /tmp/"+marker)
	if _, err := os.Stat(filepath.Join(h.Dir, "tmp", marker)); err != nil {
		t.Errorf("the file written to the host's /tmp is not in its folder: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/tmp", marker)); err == nil {
		t.Errorf("the host's /tmp is the machine's /tmp")
	}
	signer2, pub2 := newKey(t)
	h2 := startHost(t, p, "i-second", pub2)
	if h2.NSAddr == h.NSAddr || h2.Namespace == h.Namespace {
		t.Fatalf("two hosts share %s / %s", h.NSAddr, h.Namespace)
	}
	c2 := mustDial(t, h2.Addr, h2.Port, signer2)
	if out, _, err := sshRun(c2, "test -e /tmp/"+marker); err == nil {
		t.Errorf("host 2 sees host 1's /tmp/%s (%s)", marker, out)
	}
	if _, err := dialSSH(h2.Addr, h2.Port, signer); err == nil {
		t.Error("host 2 accepts host 1's key")
	}
	// The machine itself keeps its own /usr/local/sbin.
	if _, err := os.Stat("/usr/local/sbin/shutdown"); err == nil {
		t.Error("/usr/local/sbin/shutdown exists outside the hosts")
	}

	// The stand-in nix, as root through sudo (as the payload runs it) ...
	mustRun(t, c, "mkdir -p /tmp/build/cfg && echo '{ }' > /tmp/build/cfg/configuration.nix")
	const standinBuild = "nix --extra-experimental-features 'nix-command flakes' build -L " +
		"-I nixos-config=/tmp/build/cfg/configuration.nix -I nixpkgs=channel:nixos-26.05 --file '<nixpkgs/nixos>' config.system.build.sdImage --out-link /tmp/build/result"
	// ... builds in TMPDIR, else /tmp, as Nix does: the small tmpfs /tmp is
	// too small for it ...
	if _, stderr, err := sshRun(c, "cd /tmp/build && sudo -n -H "+standinBuild); err == nil || !strings.Contains(stderr, "No space left on device") ||
		!strings.Contains(stderr, "-nixos-sd-image.drv' failed with exit code 1") {
		t.Errorf("a build in the tmpfs /tmp: %v, %q; want it out of space", err, stderr)
	}
	if got := strings.Join(strings.Fields(mustRun(t, c, "ls -A /tmp; df -k --output=fstype,size /tmp | tail -n 1")), " "); !strings.HasSuffix(got, fmt.Sprintf("tmpfs %d", hostTmpMiB*1024)) || strings.Contains(got, "nix-build-") {
		t.Errorf("/tmp after the failed build: %q; want a %d MiB tmpfs without the build's directory", got, hostTmpMiB)
	}
	// ... and on the volume.
	out := mustRun(t, c, "cd /tmp/build && sudo -n -H env TMPDIR=/var/tmp "+standinBuild+" && "+
		"readlink /tmp/build/result && ls /tmp/build/result/sd-image/ && ls -A /var/tmp")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "/var/lib/nixos-sd-standin/store/") || !strings.HasSuffix(lines[0], "-nixos-sd-image") ||
		lines[1] != "nixos-image-sd-card-26.05.20260601.0000000-aarch64-linux.img.zst" {
		t.Fatalf("out link and image: %q", lines)
	}
	img := "/tmp/build/result/sd-image/" + lines[1]
	sf := mustRun(t, c, "zstd -dcq "+img+" > /var/tmp/x.img && /usr/sbin/sfdisk -J /var/tmp/x.img")
	var table struct {
		PartitionTable struct {
			Label      string `json:"label"`
			Partitions []struct {
				Start int64  `json:"start"`
				Type  string `json:"type"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(sf), &table); err != nil {
		t.Fatalf("sfdisk -J: %v\n%s", err, sf)
	}
	pt := table.PartitionTable
	if pt.Label != "dos" || len(pt.Partitions) != 2 || (pt.Partitions[0].Type != "c" && pt.Partitions[0].Type != "b") || pt.Partitions[1].Type != "83" {
		t.Fatalf("partition table %+v, want dos with FAT32 (b or c) and Linux (83)", pt)
	}
	for i, want := range []string{`LABEL="FIRMWARE"`, `LABEL="NIXOS_SD"`} {
		got := mustRun(t, c, fmt.Sprintf("/usr/sbin/blkid -p -O %d /var/tmp/x.img", pt.Partitions[i].Start*512))
		if !strings.Contains(got, want) {
			t.Errorf("partition %d: blkid %q, want %s", i+1, got, want)
		}
	}

	// As admin, Debian's Nix cannot reach its daemon: admin is not in
	// nix-users.
	nb := "cd /tmp/build && nix-build '<nixpkgs/nixos>' -A config.system.build.sdImage -I nixos-config=/tmp/build/cfg/configuration.nix -I nixpkgs=channel:nixos-26.05 -o /tmp/build/fail"
	if _, stderr, err := sshRun(c, nb); err == nil || !strings.Contains(stderr, "/nix/var/nix/daemon-socket/socket': Permission denied") {
		t.Errorf("nix-build as admin: %v, %q; want the real Nix's permission error", err, stderr)
	}
	// As root, failing on STANDIN_FAIL.
	mustRun(t, c, "echo '# STANDIN_FAIL' >> /tmp/build/cfg/configuration.nix")
	stdout, stderr, err := sshRun(c, "sudo -n -H sh -c "+remotecmd.Quote(nb))
	var exitErr *ssh.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitStatus() != 1 {
		t.Fatalf("nix-build with STANDIN_FAIL: %v (want exit status 1)\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "error: builder for '/nix/store/") || !strings.Contains(stderr, "-nixos-sd-image.drv' failed with exit code 1") {
		t.Errorf("nix-build with STANDIN_FAIL said %q", stderr)
	}
	standin, err := h.StandInCalls()
	if err != nil {
		t.Fatal(err)
	}
	if len(standin) != 6 || !strings.HasPrefix(standin[0], "nix --version") || !strings.HasPrefix(standin[1], "nix-build --version") ||
		!strings.HasPrefix(standin[2], "nix --extra-experimental-features nix-command\\ flakes build -L") ||
		!strings.HasPrefix(standin[3], "nix --extra-experimental-features nix-command\\ flakes build -L") ||
		!strings.HasPrefix(standin[4], "nix-build ") || !strings.HasPrefix(standin[5], "nix-build ") {
		t.Errorf("StandInCalls() = %q", standin)
	}

	// Stop keeps the records readable.
	dir := h.Dir
	if err := p.Stop(h.ID); err != nil {
		t.Fatal(err)
	}
	if calls, err := h.ShutdownCalls(); err != nil || len(calls) != 2 {
		t.Errorf("after Stop, ShutdownCalls() = %q, %v", calls, err)
	}
	if sh, ok := p.Stopped(h.ID); !ok || sh != h {
		t.Errorf("Stopped(%s) = %v, %v", h.ID, sh, ok)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("host folder %s still there after Stop: %v", dir, err)
	}
	if err := p.Stop(h.ID); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := p.Stop("i-never-started"); err == nil {
		t.Error("Stop of an unknown host succeeded")
	}
}

func TestHostStopRemovesNamespaceAndVeth(t *testing.T) {
	p := newTestPool(t, HostPoolOptions{BootDelay: 200 * time.Millisecond, Link: &LinkProfile{RateMbit: 100}})
	signer, pub := newKey(t)
	begin := time.Now()
	h := startHost(t, p, "i-stopme", pub)
	if d := time.Since(begin); d < 200*time.Millisecond {
		t.Errorf("Start returned after %v, before BootDelay", d)
	}
	c := mustDial(t, h.Addr, h.Port, signer)
	// A process left running in the namespace must not survive Stop.
	mustRun(t, c, "nohup sleep 300 >/dev/null 2>&1 &")
	ns, veth := h.Namespace, h.net.hostIf
	if !strings.Contains(ipOut(t, "netns", "list"), ns) || !strings.Contains(ipOut(t, "link", "show"), veth) {
		t.Fatalf("namespace %s or veth %s missing while the host runs", ns, veth)
	}
	if q, err := exec.Command("tc", "qdisc", "show", "dev", veth).CombinedOutput(); err != nil || !strings.Contains(string(q), "tbf") {
		t.Errorf("no tbf on %s: %s %v", veth, q, err)
	}
	if err := p.Stop(h.ID); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ipOut(t, "netns", "list"), ns) {
		t.Errorf("namespace %s still listed after Stop", ns)
	}
	if strings.Contains(ipOut(t, "link", "show"), veth) {
		t.Errorf("veth %s still there after Stop", veth)
	}
	if len(p.Running()) != 0 {
		t.Errorf("Running() = %v after Stop", p.Running())
	}
	// The old address goes nowhere now, in particular not off the machine.
	if out, err := exec.Command("ip", "route", "get", h.NSAddr).CombinedOutput(); err == nil {
		t.Errorf("%s is still routed after Stop: %s", h.NSAddr, out)
	}
	if out, err := exec.Command("pgrep", "-f", "sshd -D -e").Output(); err == nil {
		// Other pools may run; make sure none is this host's.
		for _, pid := range strings.Fields(string(out)) {
			if link, _ := os.Readlink("/proc/" + pid + "/ns/net"); link != "" {
				if data, _ := os.ReadFile("/proc/" + pid + "/cmdline"); bytes.Contains(data, []byte(h.Dir)) {
					t.Errorf("sshd %s of the stopped host still runs", pid)
				}
			}
		}
	}
	// Cancelling during the boot delay gives up the host.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.Start(ctx, "i-cancelled", []string{pub}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start with a context ending during BootDelay: %v", err)
	}
	if len(p.Running()) != 0 {
		t.Errorf("Running() = %v after a cancelled Start", p.Running())
	}
}

func ipOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
	return string(out)
}

// download measures bytes/s of `cat path` over c.
func download(t *testing.T, c *ssh.Client, path string) (int64, float64) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("cat " + path); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	var n int64
	buf := make([]byte, 256*1024)
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if err != nil {
			break
		}
	}
	d := time.Since(begin)
	if err := s.Wait(); err != nil {
		t.Fatalf("cat %s: %v", path, err)
	}
	return n, float64(n) / d.Seconds()
}

func writeRandom(t *testing.T, path string, size int) {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHostLinkRateCapsThroughput(t *testing.T) {
	const rateMbit = 16.0
	const size = 4 << 20
	shaped := newTestPool(t, HostPoolOptions{Link: &LinkProfile{RateMbit: rateMbit}})
	plain := newTestPool(t, HostPoolOptions{})
	signer, pub := newKey(t)
	hs := startHost(t, shaped, "i-shaped", pub)
	hp := startHost(t, plain, "i-plain", pub)
	for _, h := range []*Host{hs, hp} {
		writeRandom(t, filepath.Join(h.Dir, "tmp", "blob"), size)
	}
	cs := mustDial(t, hs.Addr, hs.Port, signer)
	cp := mustDial(t, hp.Addr, hp.Port, signer)
	n, shapedBps := download(t, cs, "/tmp/blob")
	if n != size {
		t.Fatalf("shaped download got %d bytes, want %d", n, size)
	}
	_, plainBps := download(t, cp, "/tmp/blob")
	capBps := rateMbit * 1e6 / 8
	t.Logf("shaped %.2f MB/s (cap %.2f MB/s), unshaped %.2f MB/s", shapedBps/1e6, capBps/1e6, plainBps/1e6)
	if shapedBps > 1.5*capBps {
		t.Errorf("shaped download at %.2f MB/s, above 1.5x the %.0f Mbit/s cap", shapedBps/1e6, rateMbit)
	}
	if shapedBps < 0.3*capBps {
		t.Errorf("shaped download at %.2f MB/s, far below the %.0f Mbit/s cap", shapedBps/1e6, rateMbit)
	}
	if plainBps < 2*capBps {
		t.Errorf("unshaped download at %.2f MB/s is not clearly faster than the cap", plainBps/1e6)
	}
}

func TestHostDelayProxyAddsRTT(t *testing.T) {
	const rtt = 200 * time.Millisecond
	p := newTestPool(t, HostPoolOptions{Link: &LinkProfile{RTT: rtt}})
	signer, pub := newKey(t)
	addr, port := p.NextEndpoint()
	if addr != "127.0.0.1" || port == 22 {
		t.Fatalf("NextEndpoint with an RTT = %s:%d, want the delay proxy on 127.0.0.1", addr, port)
	}
	// The proxy listens before the host exists.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), time.Second); err != nil {
		t.Errorf("the delay proxy does not listen before Start: %v", err)
	} else {
		c.Close()
	}
	h := startHost(t, p, "i-far-away", pub)
	if h.Addr != addr || h.Port != port {
		t.Fatalf("host at %s:%d, NextEndpoint said %s:%d", h.Addr, h.Port, addr, port)
	}
	viaProxy := mustDial(t, h.Addr, h.Port, signer)
	direct := mustDial(t, h.NSAddr, 22, signer)
	roundTrip := func(c *ssh.Client) time.Duration {
		var ds []time.Duration
		for i := 0; i < 5; i++ {
			begin := time.Now()
			if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, time.Since(begin))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	slow, fast := roundTrip(viaProxy), roundTrip(direct)
	t.Logf("round trip via the proxy %v, direct %v", slow, fast)
	if added := slow - fast; added < rtt*9/10 || added > rtt+300*time.Millisecond {
		t.Errorf("the proxy adds %v to a round trip, want about %v", added, rtt)
	}
	// Data streams: a download is not limited to one chunk per round trip.
	writeRandom(t, filepath.Join(h.Dir, "tmp", "blob"), 8<<20)
	_, bps := download(t, viaProxy, "/tmp/blob")
	chunkPerRTT := float64(delayChunk) / rtt.Seconds()
	t.Logf("download through the proxy: %.2f MB/s (one chunk per RTT would be %.2f MB/s)", bps/1e6, chunkPerRTT/1e6)
	if bps < 4*chunkPerRTT {
		t.Errorf("download through the proxy at %.2f MB/s: the queue does not pipeline", bps/1e6)
	}
	// Stop closes the proxy.
	if err := p.Stop(h.ID); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), time.Second); err == nil {
		c.Close()
		t.Error("the delay proxy still listens after Stop")
	}
}

func TestHostFailedMountFailsStart(t *testing.T) {
	p := newTestPool(t, HostPoolOptions{})
	p.extraMounts = [][2]string{{"/nonexistent/nixos-sd-testbed", "/mnt"}}
	_, pub := newKey(t)
	// Only this process's namespaces: other test beds on the machine come and go.
	own := func() string {
		var mine []string
		for _, l := range strings.Split(ipOut(t, "netns", "list"), "\n") {
			if strings.HasPrefix(l, fmt.Sprintf("nsd%d-", os.Getpid()%1000)) {
				mine = append(mine, l)
			}
		}
		return strings.Join(mine, "\n")
	}
	before := own()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := p.Start(ctx, "i-badmount", []string{pub})
	if err == nil {
		t.Fatalf("Start succeeded with a failing bind mount (host %+v)", h)
	}
	t.Logf("Start: %v", err)
	if !strings.Contains(err.Error(), "sshd exited") {
		t.Errorf("Start's error does not say sshd did not start: %v", err)
	}
	if after := own(); after != before {
		t.Errorf("a failed Start left a namespace: before %q, after %q", before, after)
	}
	if entries, _ := os.ReadDir(p.WorkDir()); len(entries) != 0 {
		t.Errorf("a failed Start left %d entries in %s", len(entries), p.WorkDir())
	}
	if len(p.Running()) != 0 {
		t.Errorf("Running() = %v", p.Running())
	}
}

func TestHostConcurrentStarts(t *testing.T) {
	p := newTestPool(t, HostPoolOptions{})
	signer, pub := newKey(t)
	const n = 4
	hosts := make([]*Host, n)
	errs := make([]error, n)
	done := make(chan int)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		go func() {
			hosts[i], errs[i] = p.Start(ctx, fmt.Sprintf("i-par%d", i), []string{pub})
			done <- i
		}()
	}
	for i := 0; i < n; i++ {
		<-done
	}
	seen := map[string]bool{}
	for i, h := range hosts {
		if errs[i] != nil {
			t.Fatalf("Start %d: %v", i, errs[i])
		}
		if seen[h.NSAddr] || seen[h.Namespace] {
			t.Fatalf("hosts share %s or %s", h.NSAddr, h.Namespace)
		}
		seen[h.NSAddr], seen[h.Namespace] = true, true
		c := mustDial(t, h.Addr, h.Port, signer)
		mustRun(t, c, "sudo -n true")
	}
	if got := p.Running(); len(got) != n {
		t.Errorf("Running() = %v", got)
	}
	if _, err := p.Start(ctx, "i-par0", []string{pub}); err == nil {
		t.Error("a second Start of a running id succeeded")
	}
}
