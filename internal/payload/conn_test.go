package payload

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
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

// newSSHServer serves SSH with the host key from hostSeed to the user key
// it returns: user when given, else a new one.
func newSSHServer(t *testing.T, hostSeed byte, user ...ssh.Signer) (*sshServer, ssh.Signer) {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = hostSeed
	hostKey, _ := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(seed))
	if len(user) == 0 {
		_, userPriv, _ := ed25519.GenerateKey(rand.Reader)
		u, _ := ssh.NewSignerFromKey(userPriv)
		user = []ssh.Signer{u}
	}
	return startSSHServer(t, hostKey, user[0]), user[0]
}

func startSSHServer(t *testing.T, hostKey, user ssh.Signer) *sshServer {
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
	return s
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
				drop := func() {
					if s.dropped.CompareAndSwap(false, true) {
						s.drop()
					}
				}
				out := &dropAfter{w: ch, left: -1, drop: drop}
				if s.dropWhen != nil && !s.dropped.Load() && s.dropWhen(cmd) {
					out.left = s.dropBytes
				}
				c := exec.Command("bash", "-c", cmd)
				var first struct{ off, n int64 }
				_, ferr := fmt.Sscanf(cmd, "off=%d n=%d;", &first.off, &first.n)
				// The input of a streaming channel asks for ranges: each is
				// logged as a range command would be, and dropWhen may pick
				// one, counted from where its bytes begin in the output.
				watch := &requestWatch{r: ch, each: func(off, n, before int64) {
					line := fmt.Sprintf("range skip=%d count=%d", off, n)
					s.mu.Lock()
					s.execs = append(s.execs, line)
					s.mu.Unlock()
					if s.dropWhen != nil && !s.dropped.Load() && s.dropWhen(line) {
						out.dropAt(before + int64(s.dropBytes))
					}
				}}
				if ferr == nil {
					// A streaming command's first range.
					watch.each(first.off, first.n, 0)
					watch.asked = first.n
				}
				c.Stdout, c.Stderr = out, ch.Stderr()
				// As sshd does, the channel ends when the command does,
				// whether or not its input ended.
				stdin, _ := c.StdinPipe()
				go func() {
					io.Copy(stdin, watch)
					stdin.Close()
				}()
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

// dropAfter passes left bytes on, then calls drop; left < 0 passes
// everything.
type dropAfter struct {
	w       io.Writer
	mu      sync.Mutex
	left    int
	written int64
	drop    func()
}

// dropAt makes the output drop once it reached byte at.
func (d *dropAfter) dropAt(at int64) {
	d.mu.Lock()
	d.left = int(at - d.written)
	d.mu.Unlock()
}

func (d *dropAfter) Write(p []byte) (int, error) {
	d.mu.Lock()
	left := d.left
	d.mu.Unlock()
	if left < 0 {
		n, err := d.w.Write(p)
		d.mu.Lock()
		d.written += int64(n)
		d.mu.Unlock()
		return n, err
	}
	if left == 0 {
		d.drop()
		return 0, io.ErrClosedPipe
	}
	if len(p) > left {
		p = p[:left]
	}
	n, err := d.w.Write(p)
	d.mu.Lock()
	d.left -= n
	d.written += int64(n)
	left = d.left
	d.mu.Unlock()
	if left <= 0 {
		d.drop()
	}
	return n, err
}

// requestWatch passes a channel's input on and calls each for every
// "OFFSET LENGTH" line, with how many bytes the lines before asked for.
type requestWatch struct {
	r     io.Reader
	buf   []byte
	asked int64
	each  func(off, n, before int64)
}

func (w *requestWatch) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.buf = append(w.buf, p[:n]...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		var off, k int64
		if _, serr := fmt.Sscan(string(w.buf[:i]), &off, &k); serr == nil {
			w.each(off, k, w.asked)
			w.asked += k
		}
		w.buf = w.buf[i+1:]
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
	downloadAndCompare(t, d, src, want)
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
	b, _ := newSSHServer(t, 2, user)
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

// A channel on a connection of our own serves range after range in one
// session, asking for the next before the current one is out.
func TestOwnConnectionStreamsRanges(t *testing.T) {
	srv, user := newSSHServer(t, 1)
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 6<<20+99, 3)
	conn := &sshConn{target: srv.target(user), pin: &hostKeyPin{}}
	defer conn.close()
	d := &downloader{conns: []*sshConn{conn}, connChannels: 2, chunkSize: 512 << 10, retryDelay: time.Millisecond}
	downloadAndCompare(t, d, src, want)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var sessions, ranges int
	for _, c := range srv.execs {
		if strings.HasPrefix(c, "range ") {
			ranges++
		} else {
			sessions++
		}
	}
	if ranges != 13 || sessions != 2 {
		// Each session's first range is in its command.
		t.Fatalf("%d ranges over %d sessions, want 13 over the 2 channels' sessions:\n%s", ranges, sessions, strings.Join(srv.execs, "\n"))
	}
}

// A range command that fails ends its channel's session: the range is
// fetched again, and the one asked for after it goes back to the queue
// without counting as a failure.
func TestOwnConnectionStreamRetriesAFailedRange(t *testing.T) {
	srv, user := newSSHServer(t, 1)
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 4<<20, 5)
	// dd fails the first time it is asked for the second range.
	fake := filepath.Join(dir, "bin")
	os.Mkdir(fake, 0o755)
	flag := filepath.Join(dir, "failed-once")
	script := "#!/bin/bash\nfor a in \"$@\"; do [ \"$a\" = skip=1048576 ] && [ ! -e " + flag + " ] && { touch " + flag + "; echo 'dd: error reading: Input/output error' >&2; exit 1; }; done\nexec /bin/dd \"$@\"\n"
	if err := os.WriteFile(filepath.Join(fake, "dd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+":"+os.Getenv("PATH"))
	conn := &sshConn{target: srv.target(user), pin: &hostKeyPin{}}
	defer conn.close()
	d := &downloader{conns: []*sshConn{conn}, connChannels: 1, chunkSize: 1 << 20, retryDelay: time.Millisecond}
	downloadAndCompare(t, d, src, want)
	if _, err := os.Stat(flag); err != nil {
		t.Fatal("the failing dd never ran")
	}
	if n := d.resumed.Load(); n != 1 {
		t.Fatalf("%d ranges counted as resumed, want 1 (the failed one, not the one asked for after it)", n)
	}
}

// Once channels on a connection of our own run, the communicator's take no
// new ranges: they hand the download over.
func TestOwnConnectionsTakeTheDownloadOver(t *testing.T) {
	srv, user := newSSHServer(t, 1)
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 24<<20, 9)
	conn := &sshConn{target: srv.target(user), pin: &hostKeyPin{}}
	defer conn.close()
	comm := &localComm{}
	d := &downloader{comm: comm, channels: 2, conns: []*sshConn{conn}, connChannels: 2, chunkSize: 1 << 20, retryDelay: time.Millisecond}
	downloadAndCompare(t, d, src, want)
	if n := len(comm.Commands()); n > 2 {
		t.Fatalf("the communicator's 2 channels ran %d ranges; once the connection of our own ran they should have taken none:\n%s", n, strings.Join(comm.Commands(), "\n"))
	}
}

// When no connection of our own can be opened, the communicator's channels
// take the download back.
func TestCommunicatorTakesBackWhenOwnConnectionsFail(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 8<<20, 4)
	_, user := newSSHServer(t, 1)
	conn := &sshConn{target: &SSHTarget{Address: addr, Config: &ssh.ClientConfig{User: "u", Auth: []ssh.AuthMethod{ssh.PublicKeys(user)}, HostKeyCallback: ssh.InsecureIgnoreHostKey()}}, pin: &hostKeyPin{}}
	defer conn.close()
	comm := &localComm{}
	d := &downloader{comm: comm, channels: 1, conns: []*sshConn{conn}, connChannels: 2, chunkSize: 1 << 20,
		retryDelay: time.Millisecond, patience: 200 * time.Millisecond}
	downloadAndCompare(t, d, src, want)
	if n := len(comm.Commands()); n < 8 {
		t.Fatalf("the communicator's channel ran %d of the 8 ranges", n)
	}
}

// downloadAndCompare downloads src with d into a file beside it and checks
// that it holds want.
func downloadAndCompare(t *testing.T, d *downloader, src string, want []byte) {
	t.Helper()
	dst, err := os.Create(src + ".local")
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.download(ctx, src, int64(len(want)), dst); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst.Name())
	if !bytes.Equal(got, want) {
		t.Fatal("the download differs from the source")
	}
}
