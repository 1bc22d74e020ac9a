package payload

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshServer is an in-process SSH server that runs exec requests with a
// local bash, as sshd would; it can drop every connection at once.
type sshServer struct {
	t      *testing.T
	ln     net.Listener
	cfg    *ssh.ServerConfig
	mu     sync.Mutex
	conns  []net.Conn
	execs  []string
	accept atomic.Int64
	// dropWhen, when set, is called with each exec's command; a true
	// answer drops every connection once the command wrote dropBytes.
	dropWhen  func(cmd string) bool
	dropBytes int
	dropped   atomic.Bool
}

func newSSHServer(t *testing.T, hostSeed byte) (*sshServer, ssh.Signer) {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = hostSeed
	hostKey, _ := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(seed))
	_, userPriv, _ := ed25519.GenerateKey(rand.Reader)
	user, _ := ssh.NewSignerFromKey(userPriv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if bytes.Equal(k.Marshal(), user.PublicKey().Marshal()) {
			return nil, nil
		}
		return nil, os.ErrPermission
	}}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sshServer{t: t, ln: ln, cfg: cfg}
	t.Cleanup(func() { ln.Close(); s.drop() })
	go s.serve()
	return s, user
}

func (s *sshServer) target(user ssh.Signer) *SSHTarget {
	return &SSHTarget{Address: s.ln.Addr().String(), Config: &ssh.ClientConfig{
		User: "admin", Auth: []ssh.AuthMethod{ssh.PublicKeys(user)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	}}
}

func (s *sshServer) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

func (s *sshServer) serve() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accept.Add(1)
		s.mu.Lock()
		s.conns = append(s.conns, nc)
		s.mu.Unlock()
		go s.handle(nc)
	}
}

func (s *sshServer) handle(nc net.Conn) {
	_, chans, reqs, err := ssh.NewServerConn(nc, s.cfg)
	if err != nil {
		nc.Close()
		return
	}
	go func() {
		for r := range reqs {
			// keepalive@openssh.com and the like: answered as sshd does.
			r.Reply(false, nil)
		}
	}()
	for nch := range chans {
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer ch.Close()
			for r := range creqs {
				if r.Type != "exec" {
					r.Reply(false, nil)
					continue
				}
				cmd := string(r.Payload[4:])
				r.Reply(true, nil)
				s.mu.Lock()
				s.execs = append(s.execs, cmd)
				s.mu.Unlock()
				var out io.Writer = ch
				if s.dropWhen != nil && !s.dropped.Load() && s.dropWhen(cmd) {
					out = &dropAfter{w: ch, left: s.dropBytes, drop: func() {
						if s.dropped.CompareAndSwap(false, true) {
							s.drop()
						}
					}}
				}
				c := exec.Command("bash", "-c", cmd)
				c.Stdout, c.Stderr = out, ch.Stderr()
				status := uint32(0)
				if err := c.Run(); err != nil {
					status = 1
					if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() > 0 {
						status = uint32(ee.ExitCode())
					}
				}
				b := make([]byte, 4)
				binary.BigEndian.PutUint32(b, status)
				ch.SendRequest("exit-status", false, b)
				return
			}
		}()
	}
}

// dropAfter passes left bytes on, then calls drop.
type dropAfter struct {
	w    io.Writer
	left int
	drop func()
}

func (d *dropAfter) Write(p []byte) (int, error) {
	if d.left <= 0 {
		d.drop()
		return 0, io.ErrClosedPipe
	}
	if len(p) > d.left {
		p = p[:d.left]
	}
	n, err := d.w.Write(p)
	d.left -= n
	if d.left <= 0 {
		d.drop()
	}
	return n, err
}

// A connection of our own that drops mid-range is opened again, and the
// range goes on from what arrived.
func TestOwnConnectionReconnectsAndResumes(t *testing.T) {
	srv, user := newSSHServer(t, 1)
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 3<<20+321, 7)
	srv.dropWhen = func(cmd string) bool { return strings.Contains(cmd, " skip=1048576 ") }
	srv.dropBytes = 300 << 10

	conn := &sshConn{target: srv.target(user), pin: &hostKeyPin{}}
	defer conn.close()
	// Two channels on the connection of our own, none on the communicator's.
	d := &downloader{conns: []*sshConn{conn}, connChannels: 2, chunkSize: 1 << 20, retryDelay: time.Millisecond}
	dst, _ := os.Create(filepath.Join(dir, "local"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.download(ctx, src, int64(len(want)), dst); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst.Name())
	if !bytes.Equal(got, want) {
		t.Fatal("the download differs from the source")
	}
	if !srv.dropped.Load() || srv.accept.Load() < 2 {
		t.Fatalf("the connection was not dropped and opened again (dropped %v, %d connections)", srv.dropped.Load(), srv.accept.Load())
	}
	// What was in flight when the connection dropped may be lost, so the
	// range resumes somewhere within its first 300 KiB.
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if !slices.ContainsFunc(srv.execs, func(c string) bool { s := skipOf(c); return s > 1048576 && s <= 1048576+300<<10 }) {
		t.Fatalf("the range did not resume after what arrived:\n%s", strings.Join(srv.execs, "\n"))
	}
}

// Every connection of one download must present the host key the first saw.
func TestOwnConnectionsRefuseAnotherHostKey(t *testing.T) {
	a, user := newSSHServer(t, 1)
	b, _ := newSSHServer(t, 2)
	b.cfg.PublicKeyCallback = a.cfg.PublicKeyCallback
	pin := &hostKeyPin{}
	ctx := context.Background()
	first := &sshConn{target: a.target(user), pin: pin}
	defer first.close()
	if _, err := first.measureRTT(ctx); err != nil {
		t.Fatal(err)
	}
	other := &sshConn{target: b.target(user), pin: pin}
	defer other.close()
	if _, _, err := other.connect(ctx); err == nil || !strings.Contains(err.Error(), "another host key") {
		t.Fatalf("a host with another key was accepted: %v", err)
	}
}
