package testbed

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoServer echoes each connection until its client half-closes, then
// closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newTestDelayProxy(t *testing.T, upstream string, oneWay time.Duration) *DelayProxy {
	t.Helper()
	p, err := NewDelayProxy("127.0.0.1:0", upstream, oneWay, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestDelayProxyDelaysEachRoundTrip(t *testing.T) {
	const oneWay = 50 * time.Millisecond
	p := newTestDelayProxy(t, echoServer(t), oneWay)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	for i := 0; i < 3; i++ {
		begin := time.Now()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		d := time.Since(begin)
		// The first round trip also waits for the emulated handshake.
		if d < 2*oneWay {
			t.Errorf("round trip %d took %v, want at least %v", i, d, 2*oneWay)
		}
		if string(buf) != "hello" {
			t.Errorf("echo %q", buf)
		}
	}
}

func TestDelayProxyPipelinesData(t *testing.T) {
	const oneWay = 50 * time.Millisecond
	p := newTestDelayProxy(t, echoServer(t), oneWay)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 4<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	go func() {
		_, _ = c.Write(data)
		// Half-close: the echo server sees EOF, and closes; the client
		// sees EOF after the echo.
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(begin)
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(data))
	}
	// One 32 KiB chunk per round trip would take 128 round trips (12.8 s);
	// a pipelining queue needs a few.
	oneChunkPerRTT := time.Duration(len(data)/delayChunk) * 2 * oneWay
	t.Logf("4 MiB echoed in %v (one chunk per round trip: %v)", d, oneChunkPerRTT)
	if d > oneChunkPerRTT/4 {
		t.Errorf("4 MiB echoed in %v: the proxy does not pipeline", d)
	}
}

func TestDelayProxyUpstreamDownClosesClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := newTestDelayProxy(t, dead, time.Millisecond)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	if _, err := c.Read(make([]byte, 1)); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("read from a proxy with no upstream: %v, want the connection closed", err)
	}
}

func TestDelayProxyCloseEndsConnections(t *testing.T) {
	p, err := NewDelayProxy("127.0.0.1:0", echoServer(t), time.Millisecond, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs with a connection open")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	if _, err := c.Read(make([]byte, 1)); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("read after Close: %v, want the connection closed", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("the proxy still accepts after Close")
	}
}

func TestDelayProxyHeldDoesNotDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	p := newTestDelayProxy(t, ln.Addr().String(), time.Millisecond)
	p.Hold()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	if _, err := c.Read(make([]byte, 1)); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("read through a held proxy: %v, want the connection closed", err)
	}
	select {
	case <-accepted:
		t.Error("a held proxy dialed its upstream")
	case <-time.After(100 * time.Millisecond):
	}
	p.Release()
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Error("a released proxy does not dial its upstream")
	}
}

// With a window, one connection carries at most the window per round trip.
func TestDelayProxyWindowCapsOneConnection(t *testing.T) {
	const (
		oneWay = 25 * time.Millisecond
		window = 256 << 10
		total  = 4 << 20
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.CopyN(c, rand.Reader, total)
	}()
	p := newTestDelayProxy(t, ln.Addr().String(), oneWay)
	p.SetWindow(window)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	begin := time.Now()
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != total {
		t.Fatalf("read %d of %d bytes: %v", n, total, err)
	}
	// total/window round trips at least, after the handshake's.
	if d, floor := time.Since(begin), time.Duration(total/window)*2*oneWay; d < floor {
		t.Errorf("%d bytes through a %d-byte window took %v, less than the %v the window allows", total, window, d, floor)
	}
}
