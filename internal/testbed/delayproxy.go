package testbed

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// DelayProxy is a TCP proxy that adds latency: every byte is delivered a
// fixed one-way delay after it was received, in each direction. Data is
// queued with its due time, so many chunks are in flight at once and the
// throughput is not limited to one chunk per round trip (as a sleep before
// each write would do). Opening a connection to the upstream waits one round
// trip, like a TCP handshake over the emulated link.
type DelayProxy struct {
	ln       net.Listener
	upstream string
	oneWay   time.Duration
	logf     func(string, ...any)
	// window caps the bytes in flight per connection and direction; 0 =
	// no cap.
	window int

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	// held: connections are closed without dialing the upstream (it does
	// not exist yet).
	held bool
	done chan struct{}
	wg   sync.WaitGroup
}

const (
	delayChunk = 32 * 1024
	// delayQueue chunks may wait per direction: 8 MiB, more than any TCP
	// window the tests reach, so the queue does not throttle.
	delayQueue = 256
)

// NewDelayProxy listens on listen (e.g. "127.0.0.1:0") and forwards each
// connection to upstream, delaying each direction by oneWay.
func NewDelayProxy(listen, upstream string, oneWay time.Duration, logf func(string, ...any)) (*DelayProxy, error) {
	if oneWay < 0 {
		return nil, fmt.Errorf("testbed: delay proxy: negative delay %v", oneWay)
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("testbed: delay proxy: listening on %s: %w", listen, err)
	}
	p := &DelayProxy{ln: ln, upstream: upstream, oneWay: oneWay, logf: logf,
		conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Hold makes the proxy close new connections without dialing the upstream
// (a host that is not up yet: its address is not routed to it, so a dial
// could leave the machine); Release undoes it.
func (p *DelayProxy) Hold() {
	p.mu.Lock()
	p.held = true
	p.mu.Unlock()
}

// Release lets new connections through to the upstream again.
func (p *DelayProxy) Release() {
	p.mu.Lock()
	p.held = false
	p.mu.Unlock()
}

func (p *DelayProxy) isHeld() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// SetWindow caps the bytes each connection has in flight in each direction:
// a byte counts from when the proxy reads it until its acknowledgement would
// be back (one RTT later), as a TCP sender's window works. It applies to
// connections accepted afterwards; 0 = no cap.
func (p *DelayProxy) SetWindow(bytes int) {
	p.mu.Lock()
	p.window = bytes
	p.mu.Unlock()
}

// Addr is the proxy's listening address, host:port.
func (p *DelayProxy) Addr() string { return p.ln.Addr().String() }

// Host and Port split Addr.
func (p *DelayProxy) Host() string {
	h, _, _ := net.SplitHostPort(p.Addr())
	return h
}

// Port is the proxy's listening port.
func (p *DelayProxy) Port() int {
	_, ps, _ := net.SplitHostPort(p.Addr())
	n, _ := strconv.Atoi(ps)
	return n
}

// Close stops listening and ends every proxied connection.
func (p *DelayProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	err := p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DelayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *DelayProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.logf("delay proxy %s: accept: %v", p.Addr(), err)
			}
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *DelayProxy) handle(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	// The handshake's round trip.
	select {
	case <-time.After(2 * p.oneWay):
	case <-p.done:
		return
	}
	if p.isHeld() {
		// Like a host still booting: the connection closes.
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	server, err := d.Dial("tcp", p.upstream)
	if err != nil {
		// The host is not up yet (or gone): the client sees the
		// connection close, as with an instance still booting.
		p.logf("delay proxy %s: %v", p.Addr(), err)
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(server, client) }()
	go func() { defer wg.Done(); p.pipe(client, server) }()
	wg.Wait()
}

type delayed struct {
	data []byte
	due  time.Time
	eof  bool
}

// pipe copies src to dst, each chunk due oneWay after it was read. A
// reader goroutine stamps and queues chunks; this goroutine writes them when
// due. At src's end dst's write side is closed (when due), keeping TCP's
// half-close; on any error both connections are closed.
func (p *DelayProxy) pipe(dst, src net.Conn) {
	q := make(chan delayed, delayQueue)
	stop := make(chan struct{})
	defer close(stop)
	p.mu.Lock()
	win := newFlightWindow(p.window, stop)
	p.mu.Unlock()
	go func() {
		defer close(q)
		for {
			k := win.acquire(delayChunk)
			if k == 0 {
				return
			}
			buf := make([]byte, k)
			n, err := src.Read(buf)
			// Acknowledged one RTT after it was sent.
			win.releaseAfter(n, 2*p.oneWay)
			win.release(k - n)
			if n > 0 {
				select {
				case q <- delayed{data: buf[:n], due: time.Now().Add(p.oneWay)}:
				case <-stop:
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					select {
					case q <- delayed{eof: true, due: time.Now().Add(p.oneWay)}:
					case <-stop:
					}
				} else {
					// Reset or closed: end both ways.
					_ = dst.Close()
				}
				return
			}
		}
	}()
	for c := range q {
		if wait := time.Until(c.due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-p.done:
				t.Stop()
				return
			}
		}
		if c.eof {
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			} else {
				_ = dst.Close()
			}
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			_ = src.Close()
			_ = dst.Close()
			return
		}
	}
}

// flightWindow counts one direction's bytes in flight against a cap.
type flightWindow struct {
	limit int
	mu    sync.Mutex
	cond  *sync.Cond
	used  int
	done  bool
}

// newFlightWindow caps at limit bytes (0 = none); it wakes its waiters when
// stop closes.
func newFlightWindow(limit int, stop <-chan struct{}) *flightWindow {
	w := &flightWindow{limit: limit}
	w.cond = sync.NewCond(&w.mu)
	if limit > 0 {
		go func() {
			<-stop
			w.mu.Lock()
			w.done = true
			w.cond.Broadcast()
			w.mu.Unlock()
		}()
	}
	return w
}

// acquire waits for room and takes up to n bytes of it; 0 once stopped.
func (w *flightWindow) acquire(n int) int {
	if w.limit <= 0 {
		return n
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.used >= w.limit && !w.done {
		w.cond.Wait()
	}
	if w.done {
		return 0
	}
	k := min(n, w.limit-w.used)
	w.used += k
	return k
}

func (w *flightWindow) release(n int) {
	if w.limit <= 0 || n <= 0 {
		return
	}
	w.mu.Lock()
	w.used -= n
	w.cond.Broadcast()
	w.mu.Unlock()
}

func (w *flightWindow) releaseAfter(n int, d time.Duration) {
	if w.limit <= 0 || n <= 0 {
		return
	}
	time.AfterFunc(d, func() { w.release(n) })
}
