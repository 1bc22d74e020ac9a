package payload

import (
	"time"
)

// A range that holds the contiguous prefix back is asked for a second time
// on another connection: the decoder follows the prefix, so one slow channel
// would otherwise stall it while every other range has arrived. The copy
// that lands first completes the range; both write the same bytes (SSH
// delivers them intact or not at all), so neither harms the other.
const (
	// hedgeMinAge is how long a range must have been in flight before it
	// is asked for again.
	hedgeMinAge = time.Second
	// hedgeSlowness is how many times its expected time (from the ranges
	// that arrived so far) a range must have taken.
	hedgeSlowness = 3
	// hedgeTick is how often channels waiting for a range look again.
	hedgeTick = 250 * time.Millisecond
)

// race ties a range to its second request; q.mu guards it.
type race struct {
	live int  // requests in flight
	done bool // one of them brought the whole range
}

// flight is a range in flight: since when, and on which connection.
type flight struct {
	since time.Time
	conn  any
}

// hedgeLocked is a second request for the range holding the prefix back,
// for a channel on connection conn; nil when none is due. q.mu is held.
func (q *rangeQueue) hedgeLocked(conn any) *chunk {
	if q.tracker == nil || q.perByte <= 0 {
		return nil
	}
	// The first range in flight that the prefix still needs.
	prefix := q.tracker.completed()
	var first *chunk
	for c := range q.flying {
		if c.off+c.n <= prefix || c.race != nil && c.race.done {
			continue
		}
		if first == nil || c.off < first.off {
			first = c
		}
	}
	if first == nil || first.race != nil && first.race.live > 1 {
		return nil
	}
	f := q.flying[first]
	if f.conn == conn {
		return nil
	}
	age := time.Since(f.since)
	expect := time.Duration(q.perByte * float64(first.n) * hedgeSlowness)
	if age < max(hedgeMinAge, expect) || q.tracker.ahead() < first.n {
		return nil
	}
	if first.race == nil {
		first.race = &race{live: 1}
	}
	first.race.live++
	q.hedged.Add(1)
	// The copy reports no progress: its bytes were counted once already.
	return &chunk{off: first.off, n: first.n, reported: first.n, race: first.race}
}

// landed records the time a range took, for the expected time of others.
// q.mu is held.
func (q *rangeQueue) landed(c *chunk) {
	f, ok := q.flying[c]
	if !ok || c.n <= 0 {
		return
	}
	per := float64(time.Since(f.since)) / float64(c.n)
	if q.perByte <= 0 {
		q.perByte = per
	} else {
		q.perByte = 0.8*q.perByte + 0.2*per
	}
}

// settleRace accounts for one request of c ending (ok: with the whole
// range) and reports whether its failure needs no retry, as the other
// request of the range arrived or is still in flight. q.mu is held.
func (q *rangeQueue) settleRace(c *chunk, ok bool) (drop bool) {
	r := c.race
	if r == nil {
		return false
	}
	r.live--
	if ok {
		r.done = true
		return false
	}
	return r.done || r.live > 0
}

// maxBacklog is how far the arrived prefix may run ahead of the local work
// (the decoder) before channels stop taking new ranges while another range
// is in flight: when this machine's CPU and not the link sets the pace,
// fetching further ahead only takes CPU from the decoder, and the bytes
// would wait for it anyway. One range stays in flight on the first
// connection (or the communicator's), so the download never stops; the
// channels resume as soon as the decoder caught up.
var maxBacklog int64 = 48 << 20

// gatedLocked reports whether the local work lags so far behind the
// download that channels should wait. The prefix grows in bursts (the
// ranges every channel asked for land at about the same time and complete
// it at once), so the backlog may exceed maxBacklog by what the channels
// of our own have asked for without the local work lagging. q.mu is held.
func (q *rangeQueue) gatedLocked() bool {
	burst := int64(q.ownActive*streamDepth) * q.carve.longest
	if q.tracker == nil || q.tracker.backlog() <= maxBacklog+burst {
		return false
	}
	q.gated.Add(1)
	return true
}
