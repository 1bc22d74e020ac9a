package hostkey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// serve runs an SSH server holding hostKeys that accepts any client, on a
// loopback port, and returns its address.
func serve(t *testing.T, hostKeys ...ssh.Signer) string {
	t.Helper()
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	for _, k := range hostKeys {
		cfg.AddHostKey(k)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for ch := range chans {
					_ = ch.Reject(ssh.Prohibited, "test")
				}
			}()
		}
	}()
	return l.Addr().String()
}

func signer(t *testing.T, p *Pair) ssh.Signer {
	t.Helper()
	s, err := ssh.ParsePrivateKey(p.PrivatePEM)
	if err != nil {
		t.Fatalf("the generated private key does not parse: %v", err)
	}
	return s
}

func dial(addr string, pin *Pin) error {
	cfg := &ssh.ClientConfig{User: "admin"}
	pin.Apply(cfg)
	c, err := ssh.Dial("tcp", addr, cfg)
	if err == nil {
		_ = c.Close()
	}
	return err
}

func TestGeneratePairMatches(t *testing.T) {
	p, err := Generate("test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(p.PrivatePEM), "-----BEGIN OPENSSH PRIVATE KEY-----\n") {
		t.Errorf("private key is not in OpenSSH's format:\n%s", p.PrivatePEM)
	}
	if got := AuthorizedLine(signer(t, p).PublicKey()); got != AuthorizedLine(p.Public) {
		t.Errorf("private key's public half %s, want %s", got, AuthorizedLine(p.Public))
	}
	if !strings.HasPrefix(AuthorizedLine(p.Public), "ssh-ed25519 ") {
		t.Errorf("public key %q is not ed25519", AuthorizedLine(p.Public))
	}
}

func TestPinAcceptsThePinnedKey(t *testing.T) {
	p, _ := Generate("test")
	addr := serve(t, signer(t, p))
	pin := New(p.Public, nil)
	if err := dial(addr, pin); err != nil {
		t.Fatalf("dialling the host with the pinned key: %v", err)
	}
	if pin.Refused() != nil {
		t.Errorf("Refused() = %v after a good connection", pin.Refused())
	}
}

func TestPinRefusesAnotherKey(t *testing.T) {
	want, _ := Generate("pinned")
	impostor, _ := Generate("impostor")
	addr := serve(t, signer(t, impostor))
	var calls int
	pin := New(want.Public, func(error) { calls++ })
	err := dial(addr, pin)
	var mm *MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("dialling an impostor: err = %v, want a *MismatchError", err)
	}
	if mm.Want != ssh.FingerprintSHA256(want.Public) || mm.Got != ssh.FingerprintSHA256(impostor.Public) {
		t.Errorf("fingerprints want=%s got=%s", mm.Want, mm.Got)
	}
	if calls != 1 || pin.Refused() == nil {
		t.Errorf("onRefuse called %d times, Refused() = %v", calls, pin.Refused())
	}
	for _, s := range []string{"refusing the SSH host at", addr, "Another machine answers", "nothing was sent", "cloud-init"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message lacks %q: %s", s, err)
		}
	}
}

// A server with several host keys must be asked for the pinned one's type.
func TestPinAsksForThePinnedType(t *testing.T) {
	p, _ := Generate("test")
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecSigner, err := ssh.NewSignerFromKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, ecSigner, signer(t, p))
	if err := dial(addr, New(p.Public, nil)); err != nil {
		t.Fatalf("a host with an ecdsa and the pinned ed25519 key: %v", err)
	}
}

func TestKnownHostsLine(t *testing.T) {
	p, _ := Generate("test")
	for _, c := range []struct {
		host string
		port int
		want string
	}{
		{"203.0.113.7", 22, "203.0.113.7 ssh-ed25519 "},
		{"127.0.0.1", 40022, "[127.0.0.1]:40022 ssh-ed25519 "},
	} {
		line := KnownHostsLine(c.host, c.port, p.Public)
		if !strings.HasPrefix(line, c.want) {
			t.Errorf("KnownHostsLine(%s, %d) = %q, want prefix %q", c.host, c.port, line, c.want)
		}
		_, hosts, key, _, _, err := ssh.ParseKnownHosts([]byte(line + "\n"))
		if err != nil || len(hosts) != 1 || hosts[0] != knownhosts.Normalize(net.JoinHostPort(c.host, "22")) && c.port == 22 ||
			AuthorizedLine(key) != AuthorizedLine(p.Public) {
			t.Errorf("known_hosts line %q parses to %v %v %v", line, hosts, key, err)
		}
	}
}
