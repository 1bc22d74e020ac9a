package payload

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"
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
	// connection alone (another connection's handshake would cost more
	// than it saves).
	minPlanSize = 16 << 20
)

// linkPlanner adds connections of our own to the download once it has
// measured the round trip to the host on the first of them.
type linkPlanner struct {
	r           *run
	target      *SSHTarget
	maxSessions int
	arrived     *atomic.Int64
}

// linkPlanner is nil when the download stays on the communicator's
// connection: no SSH target, download_connections = 1, or a small image.
func (r *run) linkPlanner(info imageInfo, _ int, arrived *atomic.Int64) *linkPlanner {
	if r.opts.SSH == nil || r.opts.SSH.Config == nil || r.cfg.DownloadConnections == 1 || info.size < minPlanSize {
		return nil
	}
	return &linkPlanner{r: r, target: r.opts.SSH, maxSessions: sessionsOr10(info.maxSessions), arrived: arrived}
}

// expected guesses how many channels the planner adds, for the range length.
func (p *linkPlanner) expected() int {
	conns, per := chooseLink(100*time.Millisecond, p.r.cfg.DownloadConnections, p.r.cfg.DownloadChannels, p.maxSessions)
	return (conns - 1) * per
}

// workers opens the first extra connection, measures the round trip on it,
// and returns the channels of every extra connection (which open on first
// use) and the connections.
func (p *linkPlanner) workers(ctx context.Context) ([]worker, []*sshConn) {
	pin := &hostKeyPin{}
	first := &sshConn{target: p.target, pin: pin}
	rtt, err := first.measureRTT(ctx)
	if err != nil {
		first.close()
		if ctx.Err() == nil {
			p.r.ui.Say(fmt.Sprintf("Could not open another SSH connection to %s (%v); the download stays on the communicator's connection (download_connections = 1 skips this attempt)", p.target.Address, err))
		}
		return nil, nil
	}
	conns, per := chooseLink(rtt, p.r.cfg.DownloadConnections, p.r.cfg.DownloadChannels, p.maxSessions)
	if conns <= 1 {
		first.close()
		p.r.ui.Say(fmt.Sprintf("Round trip to the host: %s; one connection's window suffices", rtt.Round(100*time.Microsecond)))
		return nil, nil
	}
	cs := []*sshConn{first}
	for len(cs) < conns-1 {
		cs = append(cs, &sshConn{target: p.target, pin: pin})
	}
	var ws []worker
	for _, c := range cs {
		for range per {
			ws = append(ws, worker{src: c, own: true})
		}
	}
	p.r.ui.Say(fmt.Sprintf("Round trip to the host: %s; adding %d SSH connections with %d channels each", rtt.Round(100*time.Microsecond), len(cs), per))
	return ws, cs
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
