package payload

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// How the download chooses its connections and channels when
// download_connections and download_channels are not set. docs/performance.md
// has the measurements behind these figures.
const (
	// autoFirstChannels is how many channels start on the communicator's
	// connection, before the link is measured.
	autoFirstChannels = 4
	// channelWindow is the receive window of one golang.org/x/crypto/ssh
	// channel (64 packets of 32 KiB): one channel carries at most this much
	// per round trip.
	channelWindow = 2 << 20
	// connWindow is what one TCP connection carries per round trip with
	// Linux's default buffers (tcp_wmem's maximum on the sending host is
	// 4 MiB), whatever its channels.
	connWindow = 4 << 20
	// autoTargetRate is the rate the automatic choice provisions for, in
	// bytes per second (2 Gbit/s): faster than most users' links, so the
	// windows are never the limit below it.
	autoTargetRate = 250e6
	// maxAutoConnections caps the connections the automatic choice opens.
	maxAutoConnections = 8
	// minPlanSize: smaller images download over the communicator's
	// connection alone (other connections would save little).
	minPlanSize = 16 << 20
)

// linkPlan opens connections of our own to the host while the image
// builds: the first measures the round trip, which sets how many more to
// open, so they are ready when the download starts.
type linkPlan struct {
	target *SSHTarget
	cfg    *Config
	done   chan struct{}
	// Set when done is closed.
	rtt time.Duration
	err error

	mu     sync.Mutex
	conns  []*sshConn
	closed bool
}

// planLink starts opening connections of our own; nil when the download
// stays on the communicator's connection (no SSH target, or
// download_connections = 1). close ends them.
func (r *run) planLink(ctx context.Context) *linkPlan {
	t := r.opts.SSH
	if t == nil || t.Config == nil || r.cfg.DownloadConnections == 1 {
		return nil
	}
	p := &linkPlan{target: t, cfg: r.cfg, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		pin := &hostKeyPin{}
		first := &sshConn{target: t, pin: pin}
		if !p.add(first) {
			return
		}
		p.rtt, p.err = first.measureRTT(ctx)
		if p.err != nil {
			p.drop()
			return
		}
		// One connection of our own, even where one window suffices:
		// its channels stream ranges, where the communicator's open a
		// session per range.
		conns, per := chooseLink(p.rtt, r.cfg.DownloadConnections, r.cfg.DownloadChannels, 0)
		// Each connection opens its channels' sessions now, so the
		// download's first ranges come one round trip after it asks; a
		// failure is retried when a channel needs the connection. The plan
		// is done when they are open: until then the communicator's
		// channels download alone.
		var ready sync.WaitGroup
		ready.Go(func() { first.prestart(ctx, per) })
		for range conns - 1 {
			c := &sshConn{target: t, pin: pin}
			if !p.add(c) {
				break
			}
			ready.Go(func() { c.prestart(ctx, per) })
		}
		ready.Wait()
	}()
	return p
}

// add keeps c unless the plan was closed (then it closes c).
func (p *linkPlan) add(c *sshConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

// drop closes the connections: the download will not use them.
func (p *linkPlan) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.close()
	}
	p.conns = nil
}

// close ends the plan's connections, without waiting for the plan.
func (p *linkPlan) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.drop()
}

// expected guesses how many channels the plan adds, for the range length.
func (p *linkPlan) expected(maxSessions int) int {
	conns, per := chooseLink(100*time.Millisecond, p.cfg.DownloadConnections, p.cfg.DownloadChannels, maxSessions)
	return conns * per
}

// workers waits for the plan and returns the channels of its connections,
// saying what it chose; none for a small image.
func (p *linkPlan) workers(ctx context.Context, ui packersdk.Ui, size int64, maxSessions int) []worker {
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil
	}
	if size < minPlanSize {
		return nil
	}
	if p.err != nil {
		if ctx.Err() == nil {
			ui.Say(fmt.Sprintf("Could not open another SSH connection to %s (%v); the download stays on the communicator's connection (download_connections = 1 skips this attempt)", p.target.Address, p.err))
		}
		return nil
	}
	rtt := p.rtt.Round(100 * time.Microsecond)
	p.mu.Lock()
	conns := p.conns
	p.mu.Unlock()
	if len(conns) == 0 {
		return nil
	}
	_, per := chooseLink(p.rtt, p.cfg.DownloadConnections, p.cfg.DownloadChannels, maxSessions)
	var ws []worker
	for i, c := range conns {
		for range per {
			ws = append(ws, worker{src: c, own: true, extra: i > 0})
		}
	}
	ui.Say(fmt.Sprintf("Round trip to the host: %s; moving the download to %s of its own with %d channels each", rtt, plural(len(conns), "SSH connection"), per))
	return ws
}

// chooseLink is how many connections in all (the communicator's included)
// and how many channels on each of our own: enough windows in flight to
// carry autoTargetRate over rtt, or the configured numbers.
func chooseLink(rtt time.Duration, conns, channels, maxSessions int) (int, int) {
	inflight := autoTargetRate * rtt.Seconds()
	if conns <= 0 {
		conns = int(math.Ceil(inflight / connWindow))
		conns = min(max(conns, 1), maxAutoConnections)
	}
	if channels <= 0 {
		channels = int(math.Ceil(inflight/channelWindow/float64(conns))) + 1
	}
	// Our own connections run nothing but the download.
	channels = min(max(channels, 1), max(sessionsOr10(maxSessions)-1, 1))
	return conns, channels
}

// plural is "1 thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
