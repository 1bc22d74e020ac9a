package testbed

import (
	"context"
	"fmt"
	"math"
	"time"
)

// LinkProfile shapes the network between the machine and the instance hosts,
// to look like a link to a far-away AWS region.
type LinkProfile struct {
	// RateMbit caps the rate in each direction, in megabit/s (tc tbf on both
	// ends of the host's veth pair); 0 = not capped.
	RateMbit float64
	// RTT is added to every round trip by a TCP delay proxy on 127.0.0.1 in
	// front of each host's sshd (the kernel here has no netem), half in each
	// direction; 0 = none, and SSH goes straight to the host's address.
	RTT time.Duration
	// TCPWindow caps, with an RTT, the bytes one TCP connection has in
	// flight in each direction (sent and not yet acknowledged), as the
	// sender's socket buffer does on a real long link: one connection then
	// carries at most TCPWindow per RTT. Linux's default buffers allow about
	// 4 MiB (tcp_wmem's maximum). 0 = no cap (the proxy's queue only).
	TCPWindow int
}

func (l *LinkProfile) window() int {
	if l == nil {
		return 0
	}
	return l.TCPWindow
}

func (l *LinkProfile) rate() float64 {
	if l == nil {
		return 0
	}
	return l.RateMbit
}

func (l *LinkProfile) rtt() time.Duration {
	if l == nil {
		return 0
	}
	return l.RTT
}

func (l *LinkProfile) validate() error {
	if l == nil {
		return nil
	}
	if math.IsNaN(l.RateMbit) || math.IsInf(l.RateMbit, 0) || l.RateMbit < 0 {
		return fmt.Errorf("testbed: LinkProfile.RateMbit must be a positive number of megabit/s or 0 for no cap, got %v", l.RateMbit)
	}
	if l.RateMbit > 0 && l.RateMbit < 0.064 {
		return fmt.Errorf("testbed: LinkProfile.RateMbit %v is below tc's useful minimum of 0.064 (64 kbit/s)", l.RateMbit)
	}
	if l.TCPWindow < 0 || (l.TCPWindow > 0 && l.TCPWindow < delayChunk) {
		return fmt.Errorf("testbed: LinkProfile.TCPWindow must be 0 (no cap) or at least %d bytes, got %d", delayChunk, l.TCPWindow)
	}
	if l.RTT < 0 {
		return fmt.Errorf("testbed: LinkProfile.RTT must not be negative, got %v", l.RTT)
	}
	return nil
}

// tbfArgs are the `tc qdisc add dev X root` arguments capping a device's
// egress at rateMbit.
func tbfArgs(rateMbit float64) []string {
	kbit := int64(math.Round(rateMbit * 1000))
	bytesPerSec := rateMbit * 1e6 / 8
	// The bucket holds 10 ms worth of data, at least 32 KiB so that TCP
	// segmentation offload packets pass without being split too often.
	burst := int64(bytesPerSec / 100)
	if burst < 32*1024 {
		burst = 32 * 1024
	}
	return []string{"tbf", "rate", fmt.Sprintf("%dkbit", kbit), "burst", fmt.Sprint(burst), "latency", "100ms"}
}

// shapeVeth caps both ends of a host's veth pair: the root namespace end
// shapes uploads to the host, the namespace end downloads from it.
func shapeVeth(ctx context.Context, ns, hostIf, nsIf string, rateMbit float64) error {
	if rateMbit <= 0 {
		return nil
	}
	tbf := tbfArgs(rateMbit)
	if err := run(ctx, "tc", append([]string{"qdisc", "add", "dev", hostIf, "root"}, tbf...)...); err != nil {
		return fmt.Errorf("testbed: capping %s at %v Mbit/s: %w", hostIf, rateMbit, err)
	}
	if err := run(ctx, "tc", append([]string{"-n", ns, "qdisc", "add", "dev", nsIf, "root"}, tbf...)...); err != nil {
		return fmt.Errorf("testbed: capping %s in %s at %v Mbit/s: %w", nsIf, ns, rateMbit, err)
	}
	return nil
}
