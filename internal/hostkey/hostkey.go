// Package hostkey pins an SSH server's host key: the build generates the
// instance's host key pair, hands it to the instance in its user data, and
// every SSH connection to the instance accepts that one key only. Generate
// also makes the temporary key a build logs in with.
package hostkey

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Pair is an SSH key pair in the forms cloud-init's ssh_keys and Packer's
// communicator take.
type Pair struct {
	// PrivatePEM is the private key in OpenSSH's format.
	PrivatePEM []byte
	// Public is the public key.
	Public ssh.PublicKey
}

// Generate makes an ed25519 key pair: the instance's host key, or the key a
// build logs in with.
func Generate(comment string) (*Pair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating an ed25519 key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding the ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("encoding the ed25519 key: %w", err)
	}
	return &Pair{PrivatePEM: pem.EncodeToMemory(block), Public: sshPub}, nil
}

// AuthorizedLine is the public key as one line of OpenSSH text (type and
// base64, no comment, no newline).
func AuthorizedLine(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// KnownHostsLine is an OpenSSH known_hosts line for k at address host:port.
func KnownHostsLine(host string, port int, k ssh.PublicKey) string {
	return knownhosts.Line([]string{knownhosts.Normalize(net.JoinHostPort(host, fmt.Sprint(port)))}, k)
}

// MismatchError is a host that presented a key other than the pinned one.
type MismatchError struct {
	// Addr is the address dialled.
	Addr string
	// Want and Got are the SHA256 fingerprints of the pinned and the
	// presented key.
	Want, Got string
	// GotType is the presented key's type.
	GotType string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("refusing the SSH host at %s: it presented host key %s (%s), but the instance was given %s in its user data. "+
		"Another machine answers at this address (a wrong ssh_host or ssh_interface, an address that moved, or someone "+
		"intercepting the connection); nothing was sent to it. Check that the address is the instance's, and that the "+
		"AMI runs cloud-init, which installs the host key (ssh_keys)",
		e.Addr, e.Got, e.GotType, e.Want)
}

// Pin checks presented host keys against one pinned key. Its Callback is an
// ssh.HostKeyCallback; the first refusal is kept for Refused and passed to
// the onRefuse function given to New.
type Pin struct {
	want     ssh.PublicKey
	onRefuse func(error)

	mu      sync.Mutex
	refused error
}

// New pins want; onRefuse (may be nil) is called on each refusal, for
// example to stop retrying the connection.
func New(want ssh.PublicKey, onRefuse func(error)) *Pin {
	return &Pin{want: want, onRefuse: onRefuse}
}

// Key is the pinned key.
func (p *Pin) Key() ssh.PublicKey { return p.want }

// Algorithms are the host key algorithms to offer, so that a server holding
// several keys presents the pinned one.
func (p *Pin) Algorithms() []string {
	if p.want.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{p.want.Type()}
}

// Callback accepts the pinned key and refuses every other one.
func (p *Pin) Callback(hostname string, remote net.Addr, key ssh.PublicKey) error {
	if key != nil && key.Type() == p.want.Type() && bytes.Equal(key.Marshal(), p.want.Marshal()) {
		return nil
	}
	addr := hostname
	if remote != nil && !strings.Contains(hostname, remote.String()) {
		addr = fmt.Sprintf("%s (%s)", hostname, remote)
	}
	err := &MismatchError{Addr: addr, Want: ssh.FingerprintSHA256(p.want), Got: "none", GotType: "no key"}
	if key != nil {
		err.Got, err.GotType = ssh.FingerprintSHA256(key), key.Type()
	}
	p.mu.Lock()
	if p.refused == nil {
		p.refused = err
	}
	p.mu.Unlock()
	if p.onRefuse != nil {
		p.onRefuse(err)
	}
	return err
}

// Refused is the first refusal, nil when none happened.
func (p *Pin) Refused() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// Apply makes cfg accept only the pinned key.
func (p *Pin) Apply(cfg *ssh.ClientConfig) {
	cfg.HostKeyCallback = p.Callback
	cfg.HostKeyAlgorithms = p.Algorithms()
}
