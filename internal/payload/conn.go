package payload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"golang.org/x/crypto/ssh"
)

// SSHTarget lets the download open more SSH connections to the host the
// communicator reaches, with the build's credentials: one connection's TCP
// window caps what all its channels carry together, so on a long, fast link
// several connections are faster than one.
type SSHTarget struct {
	// Address is the host's SSH address, host:port.
	Address string
	// Config holds the user, the authentication and the host key check,
	// the same the communicator's connection uses. Every extra connection
	// must moreover present the host key the first one saw.
	Config *ssh.ClientConfig
	// Dial opens the TCP connection; nil dials Address directly.
	Dial func(ctx context.Context, address string) (net.Conn, error)
}

// source runs one remote command and streams its standard output: a
// channel on the communicator's connection or on a connection of our own.
type source interface {
	run(ctx context.Context, command string, stdout, stderr io.Writer) (status int, err error)
}

// commSource runs commands through the communicator Packer handed us.
type commSource struct{ comm packersdk.Communicator }

func (s commSource) run(ctx context.Context, command string, stdout, stderr io.Writer) (int, error) {
	cmd := &packersdk.RemoteCmd{Command: command, Stdout: stdout, Stderr: stderr}
	if err := s.comm.Start(ctx, cmd); err != nil {
		return -1, fmt.Errorf("opening a download channel: %w", err)
	}
	exited := make(chan int, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case st := <-exited:
		return st, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// Keep-alives on our own connections: a link that stops answering is
// noticed within keepaliveTimeout, and the connection is opened again.
const (
	keepaliveInterval = 2 * time.Second
	keepaliveTimeout  = 10 * time.Second
)

// errDial marks a failure to open (or reopen) a connection, as opposed to a
// range that failed on an open one.
var errDial = errors.New("opening an SSH connection")

// sshConn is one SSH connection of our own to the host. It opens the
// connection on first use and again after it broke.
type sshConn struct {
	target *SSHTarget
	// pin is the host key every connection must present (shared by all
	// connections of one download).
	pin *hostKeyPin

	mu     sync.Mutex
	client *ssh.Client
	gen    int
	rtt    time.Duration
	closed bool
	// idle are streaming sessions opened ahead (prestart).
	idle []*streamSession
}

// hostKeyPin remembers the host key the first connection saw.
type hostKeyPin struct {
	mu  sync.Mutex
	key []byte
}

func (p *hostKeyPin) check(key ssh.PublicKey) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := key.Marshal()
	if p.key == nil {
		p.key = m
		return nil
	}
	if !bytes.Equal(p.key, m) {
		return fmt.Errorf("the host presented another host key (%s) than on the first download connection", ssh.FingerprintSHA256(key))
	}
	return nil
}

func (c *sshConn) connect(ctx context.Context) (*ssh.Client, int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, 0, fmt.Errorf("%w: the download is over", errDial)
	}
	if c.client != nil {
		return c.client, c.gen, nil
	}
	cfg := *c.target.Config
	check := cfg.HostKeyCallback
	cfg.HostKeyCallback = func(host string, remote net.Addr, key ssh.PublicKey) error {
		if check != nil {
			if err := check(host, remote, key); err != nil {
				return err
			}
		}
		return c.pin.check(key)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	dial := c.target.Dial
	if dial == nil {
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	nc, err := dial(dctx, c.target.Address)
	if err != nil {
		return nil, 0, fmt.Errorf("%w to %s: %w", errDial, c.target.Address, err)
	}
	// The handshake honours ctx through the connection's deadline.
	stop := context.AfterFunc(dctx, func() { nc.SetDeadline(time.Now()) })
	sc, chans, reqs, err := ssh.NewClientConn(nc, c.target.Address, &cfg)
	stop()
	if err != nil {
		nc.Close()
		return nil, 0, fmt.Errorf("%w to %s: %w", errDial, c.target.Address, err)
	}
	nc.SetDeadline(time.Time{})
	cl := ssh.NewClient(sc, chans, reqs)
	c.client = cl
	c.gen++
	go c.keepalive(cl, c.gen)
	return cl, c.gen, nil
}

// keepalive asks the host for a reply every keepaliveInterval, measuring the
// round trip, and closes the connection when no reply comes in time.
func (c *sshConn) keepalive(cl *ssh.Client, gen int) {
	for {
		start := time.Now()
		replied := make(chan error, 1)
		go func() {
			_, _, err := cl.SendRequest("keepalive@openssh.com", true, nil)
			replied <- err
		}()
		select {
		case err := <-replied:
			if err != nil {
				c.broken(gen)
				return
			}
			c.mu.Lock()
			if c.rtt == 0 || time.Since(start) < c.rtt {
				c.rtt = time.Since(start)
			}
			c.mu.Unlock()
		case <-time.After(keepaliveTimeout):
			c.broken(gen)
			return
		}
		time.Sleep(keepaliveInterval)
		c.mu.Lock()
		current := c.gen == gen && c.client != nil
		c.mu.Unlock()
		if !current {
			return
		}
	}
}

// measureRTT is the round trip on the connection (opening it first).
func (c *sshConn) measureRTT(ctx context.Context) (time.Duration, error) {
	cl, gen, err := c.connect(ctx)
	if err != nil {
		return 0, err
	}
	// The least of three: the first may wait behind the handshake's tail.
	var rtt time.Duration
	for range 3 {
		start := time.Now()
		if _, _, err := cl.SendRequest("keepalive@openssh.com", true, nil); err != nil {
			c.broken(gen)
			return 0, err
		}
		if d := time.Since(start); rtt == 0 || d < rtt {
			rtt = d
		}
	}
	c.mu.Lock()
	if c.rtt == 0 || rtt < c.rtt {
		c.rtt = rtt
	}
	c.mu.Unlock()
	return rtt, nil
}

// broken closes the connection of generation gen, so that the next command
// opens a new one.
func (c *sshConn) broken(gen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen && c.client != nil {
		c.client.Close()
		c.client = nil
	}
}

func (c *sshConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.idle = nil
	if c.client != nil {
		c.client.Close()
		c.client = nil
	}
}

func (c *sshConn) run(ctx context.Context, command string, stdout, stderr io.Writer) (int, error) {
	cl, gen, err := c.connect(ctx)
	if err != nil {
		return -1, err
	}
	s, err := cl.NewSession()
	if err != nil {
		c.broken(gen)
		return packersdk.CmdDisconnect, nil
	}
	defer s.Close()
	s.Stdout, s.Stderr = stdout, stderr
	if err := s.Start(command); err != nil {
		c.broken(gen)
		return packersdk.CmdDisconnect, nil
	}
	return c.wait(ctx, s, gen)
}

// wait waits for session s of connection generation gen to end: its exit
// status, packersdk.CmdDisconnect when the connection went (it is reopened
// next time), or ctx's error.
func (c *sshConn) wait(ctx context.Context, s *ssh.Session, gen int) (int, error) {
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Close()
		return -1, ctx.Err()
	}
	var exit *ssh.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		return exit.ExitStatus(), nil
	default:
		// ExitMissingError, io.EOF: the connection went.
		c.broken(gen)
		return packersdk.CmdDisconnect, nil
	}
}

// streamSession is a channel running streamCommand: its input, its end,
// and outputs that can be pointed at their readers once the file is known.
type streamSession struct {
	in             io.WriteCloser
	wait           func(ctx context.Context) (int, error) // ends early with ctx
	stdout, stderr *switchWriter
	gen            int
}

// switchWriter passes writes to w, set when the session is put to use;
// before that (the command waits for its input) nothing is written.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	w := s.w
	s.mu.Unlock()
	if w == nil {
		return len(p), nil
	}
	return w.Write(p)
}

// openStream opens a session running streamCommand.
func (c *sshConn) openStream(ctx context.Context) (*streamSession, error) {
	cl, gen, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	s, err := cl.NewSession()
	if err != nil {
		var refused *ssh.OpenChannelError
		if !errors.As(err, &refused) {
			// Refused (sshd's MaxSessions, say) leaves the connection
			// usable; anything else means it is gone.
			c.broken(gen)
		}
		return nil, fmt.Errorf("%w: opening a session: %w", errDial, err)
	}
	in, err := s.StdinPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	ss := &streamSession{in: in, stdout: &switchWriter{}, stderr: &switchWriter{}, gen: gen}
	s.Stdout, s.Stderr = ss.stdout, ss.stderr
	if err := s.Start(streamCommand()); err != nil {
		s.Close()
		c.broken(gen)
		return nil, fmt.Errorf("%w: starting the range command: %w", errDial, err)
	}
	ss.wait = func(ctx context.Context) (int, error) {
		defer s.Close()
		return c.wait(ctx, s, gen)
	}
	return ss, nil
}

// prestart opens n streaming sessions ahead of the download, so that its
// ranges begin one round trip after they are asked for (a new session
// takes two, and the host's session setup).
func (c *sshConn) prestart(ctx context.Context, n int) {
	for range n {
		ss, err := c.openStream(ctx)
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			ss.in.Close()
			return
		}
		c.idle = append(c.idle, ss)
		c.mu.Unlock()
	}
}

// stream hands out a streaming session: one opened ahead on the current
// connection, or a new one.
func (c *sshConn) stream(ctx context.Context) (*streamSession, error) {
	c.mu.Lock()
	for len(c.idle) > 0 {
		ss := c.idle[0]
		c.idle = c.idle[1:]
		if ss.gen == c.gen && c.client != nil {
			c.mu.Unlock()
			return ss, nil
		}
		ss.in.Close()
	}
	c.mu.Unlock()
	return c.openStream(ctx)
}
