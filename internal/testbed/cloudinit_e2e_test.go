//go:build e2e

package testbed

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
)

// An instance's host serves the host key its user data gives (and no
// other), admits the user data's ssh_authorized_keys, and runs its runcmd
// as root once sshd is up.
func TestHostCloudInitUserData(t *testing.T) {
	p := newTestPool(t, HostPoolOptions{})
	signer, pub := newKey(t)
	pair, err := hostkey.Generate("test")
	if err != nil {
		t.Fatal(err)
	}
	ud := fmt.Sprintf("#cloud-config\nssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n%s  ed25519_public: %q\n"+
		"ssh_authorized_keys:\n  - %q\nruncmd:\n  - [shutdown, -P, \"+16\", \"lifetime: reached\"]\n  - id -un > /var/lib/nixos-sd-standin/runcmd-user\n",
		indent(string(pair.PrivatePEM), "    "), hostkey.AuthorizedLine(pair.Public), pub)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := p.StartInstance(ctx, "i-cloudinit", nil, []byte(ud))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ClientConfig{User: "admin", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, Timeout: 10 * time.Second}
	hostkey.New(pair.Public, nil).Apply(cfg)
	c, err := ssh.Dial("tcp", net.JoinHostPort(h.Addr, strconv.Itoa(h.Port)), cfg)
	if err != nil {
		t.Fatalf("ssh with the user data's login key, pinning its host key: %v", err)
	}
	defer c.Close()

	// No other host key type is offered.
	for _, alg := range []string{ssh.KeyAlgoRSASHA256, ssh.KeyAlgoECDSA256} {
		other := &ssh.ClientConfig{User: "admin", HostKeyCallback: ssh.InsecureIgnoreHostKey(), HostKeyAlgorithms: []string{alg}, Timeout: 10 * time.Second}
		if c2, err := ssh.Dial("tcp", net.JoinHostPort(h.Addr, strconv.Itoa(h.Port)), other); err == nil || !strings.Contains(err.Error(), "no common algorithm") {
			if c2 != nil {
				c2.Close()
			}
			t.Errorf("the host offers a %s host key too (err %v)", alg, err)
		}
	}

	var calls []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if calls, _ = h.ShutdownCalls(); len(calls) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if want := `shutdown -P +16 lifetime:\ reached`; len(calls) != 1 || calls[0] != want {
		t.Errorf("shutdown records %q, want [%q] from runcmd", calls, want)
	}
	out, _, err := sshRun(c, "cat /var/lib/nixos-sd-standin/runcmd-user")
	if err != nil || strings.TrimSpace(out) != "root" {
		t.Errorf("runcmd ran as %q (%v), want root", out, err)
	}
}

// User data the stand-in cannot play fails the host's start instead of
// booting it as if it had none.
func TestHostCloudInitRefusesUnplayed(t *testing.T) {
	p := newTestPool(t, HostPoolOptions{})
	_, err := p.StartInstance(context.Background(), "i-script", nil, []byte("#!/bin/sh\necho hi\n"))
	if err == nil || !strings.Contains(err.Error(), "#cloud-config only") {
		t.Fatalf("err = %v", err)
	}
}
