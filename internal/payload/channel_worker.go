package payload

import (
	"cmp"
	"context"
	"errors"
	"os"
	"strings"
	"time"
)

// channelWorker is one channel of a download: it takes ranges from the
// queue and fetches them into the file, streaming range after range in one
// session where its source can, and pausing (doubling the pause, up to 8 s)
// after each failure in a row. A channel on a connection of our own gives up,
// leaving its ranges to the others, once it could not open its connection
// for the downloader's patience.
type channelWorker struct {
	d    *downloader
	q    *rangeQueue
	w    worker
	file string
	dst  *os.File
}

// run fetches ranges until the queue has none left for this channel; the
// error is the one that fails the download.
func (cw *channelWorker) run(ctx context.Context) error {
	if cw.w.own {
		cw.q.ownStarted()
		defer cw.q.ownStopped()
	}
	failures := 0
	var dialFailing time.Time
	for c := cw.q.next(cw.w); c != nil; c = cw.q.next(cw.w) {
		err, fatal := cw.fetch(ctx, c)
		if fatal != nil {
			return fatal
		}
		if err == nil || ctx.Err() != nil {
			failures = 0
			dialFailing = time.Time{}
			continue
		}
		if errors.Is(err, errDial) && cw.w.own {
			if dialFailing.IsZero() {
				dialFailing = time.Now()
			} else if time.Since(dialFailing) > cmp.Or(cw.d.patience, dialPatience) {
				return nil
			}
		}
		// Give the link (and the communicator's reconnect) a moment.
		failures++
		cw.pause(ctx, failures)
	}
	return nil
}

// fetch fetches c (and, streaming, whatever more ranges the queue hands the
// session) and tells the queue how each went. err is c's failure; fatal the
// queue's verdict that the download failed.
func (cw *channelWorker) fetch(ctx context.Context, c *chunk) (err, fatal error) {
	d := cw.d
	// A name with a newline cannot be sent on a line.
	if ss, ok := cw.w.src.(streamSource); ok && !d.compress && !strings.Contains(cw.file, "\n") {
		more := func() *chunk { return cw.q.more(cw.w) }
		return d.stream(ctx, ss, cw.file, c, more, cw.q.finish, cw.dst)
	}
	before := c.got
	err = d.fetch(ctx, cw.w.src, cw.file, c, cw.dst)
	return err, cw.q.finish(c, c.got-before, err)
}

// pause waits after the failures-th failure in a row, or until ctx ends.
func (cw *channelWorker) pause(ctx context.Context, failures int) {
	delay := cw.d.retryDelay
	if delay <= 0 {
		delay = 500 * time.Millisecond
	}
	delay = min(delay<<min(failures-1, 4), 8*time.Second)
	select {
	case <-time.After(delay):
	case <-ctx.Done():
	}
}
