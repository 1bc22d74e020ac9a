package payload

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// chooseChunk picks a range length giving each channel about four ranges,
// between 1 and 32 MiB (96 MiB for ranges compressed in transit).
func chooseChunk(size int64, channels int, compress bool) int64 {
	if channels < 1 {
		channels = 1
	}
	c := size / int64(channels*4)
	if c < minChunk {
		c = minChunk
	}
	limit := int64(maxChunk)
	if compress {
		limit = maxCompressedChunk
	}
	if c > limit {
		c = limit
	}
	return c
}

// rangeCarver cuts a file into ranges as channels ask for them: each at
// most longest, and once fewer than two per channel are left, half the
// remainder's share per channel (at least minChunk), so that the channels
// finish together rather than wait for one long last range. fixed cuts every
// range longest.
type rangeCarver struct {
	size, next int64
	longest    int64
	fixed      bool
	// channels is how many channels are expected to share the file.
	channels int
}

// take cuts the next range for one of workers channels; false when all of
// the file is taken.
func (c *rangeCarver) take(workers int) (off, n int64, ok bool) {
	left := c.size - c.next
	if left <= 0 {
		return 0, 0, false
	}
	n = min(c.longest, left)
	if !c.fixed {
		share := left / int64(2*max(workers, c.channels, 1))
		n = min(n, max(share, minChunk))
		if left-n < minChunk {
			// No short range at the end.
			n = left
		}
	}
	off = c.next
	c.next += n
	return off, n, true
}

// count is how many ranges the file makes with no failures.
func (c *rangeCarver) count() int {
	probe := *c
	k := 0
	for {
		if _, _, ok := probe.take(probe.channels); !ok {
			return k
		}
		k++
	}
}

// rangeQueue hands the ranges of one download to its channels. It owns the
// carver cutting new ranges, the ranges that failed (handed out again before
// new ones, as the completed prefix waits for them), the count of ranges in
// flight and of channels, and the rule that a range failing chunkAttempts
// times without progress fails the download. While channels on connections
// of our own run, the communicator's channels take no new range: they have
// handed the download over and wait in case those connections give up.
type rangeQueue struct {
	ctx     context.Context // the download's; its end wakes every waiting channel
	file    string
	tracker *prefixTracker // told of each range that fully arrived; may be nil
	resumed *atomic.Int64  // counts ranges fetched again after a failure

	mu        sync.Mutex
	cond      *sync.Cond
	carve     *rangeCarver
	failed    []*chunk
	inFlight  int
	channels  int // channels started, which the carver shares the rest among
	ownActive int // running channels on connections of our own
	stop      func() bool
	// flying are the ranges in flight; perByte the time a range took per
	// byte, averaged (range_hedge.go).
	flying  map[*chunk]flight
	perByte float64
	hedged  atomic.Int64 // ranges asked for a second time
	gated   atomic.Int64 // times an extra channel waited for the local work
	// arrived ends the channels once the whole file arrived while second
	// requests may still be in flight.
	arrived func()
	ticker  *time.Ticker
}

func newRangeQueue(ctx context.Context, file string, carve *rangeCarver, tracker *prefixTracker, resumed *atomic.Int64) *rangeQueue {
	q := &rangeQueue{ctx: ctx, file: file, tracker: tracker, resumed: resumed, carve: carve, flying: map[*chunk]flight{}}
	q.cond = sync.NewCond(&q.mu)
	q.stop = context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	// Waiting channels look again now and then: a range in flight may
	// have become slow enough to ask for again.
	q.ticker = time.NewTicker(hedgeTick)
	go func() {
		for {
			select {
			case <-q.ticker.C:
				q.mu.Lock()
				q.cond.Broadcast()
				q.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	return q
}

// close stops waking channels; the download's context must end after it.
func (q *rangeQueue) close() {
	q.stop()
	q.ticker.Stop()
}

// addChannel counts a channel about to start.
func (q *rangeQueue) addChannel() {
	q.mu.Lock()
	q.channels++
	q.mu.Unlock()
}

// ownStarted and ownStopped bracket the run of a channel on a connection of
// our own.
func (q *rangeQueue) ownStarted() {
	q.mu.Lock()
	q.ownActive++
	q.mu.Unlock()
}

func (q *rangeQueue) ownStopped() {
	q.mu.Lock()
	q.ownActive--
	q.cond.Broadcast()
	q.mu.Unlock()
}

// takeLocked hands out the next range for a channel on connection conn: a
// failed one first, then a second request for a range holding the prefix
// back, then a new one; q.mu is held.
func (q *rangeQueue) takeLocked(w worker) *chunk {
	conn := w.conn()
	var c *chunk
	if len(q.failed) > 0 {
		c = q.failed[0]
		q.failed = q.failed[1:]
		if c.race != nil {
			c.race.live++
		}
	} else if c = q.hedgeLocked(conn); c != nil {
	} else if (w.extra || q.inFlight > 0) && q.gatedLocked() {
		// The decoder lags: one range stays in flight, and a channel
		// beyond the first connection waits even for that.
		return nil
	} else if off, n, ok := q.carve.take(q.channels); ok {
		c = &chunk{off: off, n: n}
	} else {
		return nil
	}
	q.inFlight++
	q.flying[c] = flight{since: time.Now(), conn: conn}
	return c
}

// more is next without waiting, for a channel asking ahead; nil when no
// range is free now.
func (q *rangeQueue) more(w worker) *chunk {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ctx.Err() != nil {
		return nil
	}
	return q.takeLocked(w)
}

// next waits for a range for channel w; nil when the download is over for
// it.
func (q *rangeQueue) next(w worker) *chunk {
	own := w.own
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if q.ctx.Err() != nil {
			return nil
		}
		if own || q.ownActive == 0 {
			if c := q.takeLocked(w); c != nil {
				return c
			}
		} else if len(q.failed) > 0 || q.carve.next < q.carve.size {
			// Handed over; the channel waits in case the connections of
			// our own give up.
			q.cond.Wait()
			continue
		}
		if q.inFlight == 0 && !(w.extra && q.carve.next < q.carve.size) {
			return nil
		}
		// Another channel may give its range back.
		q.cond.Wait()
	}
}

// finish records how fetching c went (got bytes arrived this time): a
// failed range goes back to the front of the queue, and it is an error once
// the range failed chunkAttempts times without progress.
func (q *rangeQueue) finish(c *chunk, got int64, err error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inFlight--
	defer q.cond.Broadcast()
	defer delete(q.flying, c)
	if err == nil {
		q.landed(c)
		q.settleRace(c, true)
		// A fetch returns only once every byte of the range is written.
		if q.tracker != nil {
			q.tracker.complete(c.off, c.n)
			if q.hedged.Load() > 0 && q.tracker.completed() == q.carve.size && q.arrived != nil {
				q.arrived()
			}
		}
		return nil
	}
	if q.ctx.Err() != nil || q.settleRace(c, false) {
		return nil
	}
	if errors.Is(err, errUnstarted) {
		q.failed = append([]*chunk{c}, q.failed...)
		return nil
	}
	q.resumed.Add(1)
	if !errors.Is(err, errDial) && got < minChunk {
		c.attempt++
	}
	if c.attempt >= chunkAttempts {
		return fmt.Errorf("bytes %d-%d of %s failed %d times, last: %w", c.off, c.off+c.n-1, q.file, c.attempt, err)
	}
	q.failed = append([]*chunk{c}, q.failed...)
	return nil
}

// leftover is the error for ranges no channel fetched, once all of them
// stopped: every channel on a connection of our own gave up and there were
// none on the communicator's.
func (q *rangeQueue) leftover() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.failed) == 0 && q.carve.next >= q.carve.size {
		return nil
	}
	first := q.carve.next
	if len(q.failed) > 0 {
		first = q.failed[0].off
	}
	return fmt.Errorf("no channel could fetch bytes %d-%d of %s", first, q.carve.size-1, q.file)
}
