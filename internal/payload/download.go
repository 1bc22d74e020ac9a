package payload

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

const (
	minChunk = 1 << 20
	maxChunk = 32 << 20
	// maxCompressedChunk caps ranges the host compresses in transit: the cap
	// counts file bytes, of which only about a third crosses the link, and
	// every range costs a new SSH session (a few round trips of idle
	// channel), so these ranges may be three times as long.
	maxCompressedChunk = 3 * maxChunk
	// holeBlock is the granularity at which all-zero data is left unwritten,
	// so the file stays sparse.
	holeBlock = 4096
	// chunkAttempts is how often one range may fail without bringing
	// minChunk bytes before the download fails.
	chunkAttempts = 4
)

// downloader fetches one remote file over several SSH channels at once. Each
// channel is a separate remote command printing one byte range of the file;
// workers take ranges from a shared queue, so a slow channel holds up at most
// the range it is on. The channels run on the communicator's connection and,
// when conns is set, on connections of our own to the same host.
type downloader struct {
	comm     packersdk.Communicator
	channels int
	// conns are more connections to the host, each with connChannels
	// channels.
	conns        []*sshConn
	connChannels int
	// chunkSize is the length of one range; 0 chooses it from the file size.
	chunkSize int64
	// compress has the host compress each range with zstd (for files that
	// are not compressed already); the ranges are decompressed as they
	// arrive.
	compress bool
	// progress is told how many more bytes of the file have arrived.
	progress func(n int64)
	// tracker, when set, is told of every range that fully arrived, and of
	// the download's failure.
	tracker *prefixTracker
	// retryDelay is the pause after a failed range before a channel tries
	// again, doubled with each failure in a row; 0 means 500 ms.
	retryDelay time.Duration
	// patience is how long a channel on a connection of our own keeps
	// trying to open it; 0 means dialPatience.
	patience time.Duration
	// more, when set, runs beside the first channels and returns channels
	// to add (it may measure the link first).
	more func(ctx context.Context) []worker
	// expected is how many channels more will probably bring, for the
	// range length.
	expected int
	// ranges counts, for tests and the log, the range commands run;
	// resumed those that ran again after a failure.
	ranges, resumed atomic.Int64
}

type chunk struct {
	off, n int64
	// got is how many bytes of the range already arrived: a retry asks only
	// for the rest.
	got int64
	// attempt counts failures that brought less than minChunk.
	attempt  int
	reported int64 // bytes already counted towards progress
	// dirty is set when a failed write may have left data beyond got, so
	// the retry writes zero blocks too.
	dirty bool
}

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

// download copies size bytes of the remote file into dst, which it first
// truncates to size. All-zero blocks are left as holes. d.tracker, when set,
// learns of each range once it fully arrived, and of the download's failure.
func (d *downloader) download(ctx context.Context, file string, size int64, dst *os.File) error {
	err := d.downloadRanges(ctx, file, size, dst)
	if err != nil && d.tracker != nil {
		d.tracker.fail(err)
	}
	return err
}

// worker is one channel: where it runs its range commands.
type worker struct {
	src source
	// own is set for a channel on a connection of our own, which gives up
	// (leaving its ranges to the others) when its connection cannot be
	// opened for dialPatience.
	own bool
}

// dialPatience is how long a channel on a connection of our own keeps
// trying to open it before it leaves the ranges to the other channels.
const dialPatience = 60 * time.Second

func (d *downloader) workers() []worker {
	var ws []worker
	for range d.channels {
		ws = append(ws, worker{src: commSource{d.comm}})
	}
	for _, c := range d.conns {
		for range max(d.connChannels, 1) {
			ws = append(ws, worker{src: c, own: true})
		}
	}
	return ws
}

func (d *downloader) downloadRanges(ctx context.Context, file string, size int64, dst *os.File) error {
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("preparing %s: %w", dst.Name(), err)
	}
	if size == 0 {
		return nil
	}
	ws := d.workers()
	cs := d.chunkSize
	if cs <= 0 {
		cs = chooseChunk(size, len(ws)+d.expected, d.compress)
	}
	carve := &rangeCarver{size: size, longest: cs, fixed: d.chunkSize > 0, channels: len(ws) + d.expected}
	// Channels of the communicator's connection come first: a small file
	// needs no connection of our own.
	ws = ws[:min(len(ws), carve.count())]
	var workers atomic.Int64
	// queue holds ranges that failed, fetched again before new ones.
	var queue []*chunk

	// The first range to fail for good cancels the other workers.
	g, gctx := errgroup.WithContext(ctx)
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		inFlight int
		// ownActive counts the running channels on connections of our
		// own: while there are any, the communicator's channels take no
		// new ranges (they hand the download over).
		ownActive int
	)
	// Wake waiting workers when gctx ends.
	stop := context.AfterFunc(gctx, func() {
		mu.Lock()
		cond.Broadcast()
		mu.Unlock()
	})
	defer stop()

	// take hands out the next range, a failed one first; mu is held.
	take := func() *chunk {
		if len(queue) > 0 {
			c := queue[0]
			queue = queue[1:]
			inFlight++
			return c
		}
		if off, n, ok := carve.take(int(workers.Load())); ok {
			inFlight++
			return &chunk{off: off, n: n}
		}
		return nil
	}
	// more is take without waiting, for a channel asking ahead.
	more := func() *chunk {
		mu.Lock()
		defer mu.Unlock()
		if gctx.Err() != nil {
			return nil
		}
		return take()
	}
	next := func(w worker) *chunk {
		mu.Lock()
		defer mu.Unlock()
		for {
			if gctx.Err() != nil {
				return nil
			}
			if w.own || ownActive == 0 {
				if c := take(); c != nil {
					return c
				}
			} else if len(queue) > 0 || carve.next < size {
				// Handed over; the channel waits in case the
				// connections of our own give up.
				cond.Wait()
				continue
			}
			if inFlight == 0 {
				return nil
			}
			// Another worker may give its range back.
			cond.Wait()
		}
	}
	// finish records how fetching c went: a failed range goes back to the
	// front of the queue (the prefix waits for it), and it is an error once
	// the range failed chunkAttempts times without progress.
	finish := func(c *chunk, got int64, err error) error {
		mu.Lock()
		defer mu.Unlock()
		inFlight--
		defer cond.Broadcast()
		if err == nil {
			// fetch returns only once every byte of the range is written.
			if d.tracker != nil {
				d.tracker.complete(c.off, c.n)
			}
			return nil
		}
		if gctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errUnstarted) {
			queue = append([]*chunk{c}, queue...)
			return nil
		}
		d.resumed.Add(1)
		if !errors.Is(err, errDial) && got < minChunk {
			c.attempt++
		}
		if c.attempt >= chunkAttempts {
			return fmt.Errorf("bytes %d-%d of %s failed %d times, last: %w", c.off, c.off+c.n-1, file, c.attempt, err)
		}
		queue = append([]*chunk{c}, queue...)
		return nil
	}

	work := func(w worker) func() error {
		workers.Add(1)
		return func() error {
			if w.own {
				mu.Lock()
				ownActive++
				mu.Unlock()
				defer func() {
					mu.Lock()
					ownActive--
					cond.Broadcast()
					mu.Unlock()
				}()
			}
			failures := 0
			var dialFailing time.Time
			for c := next(w); c != nil; c = next(w) {
				var err error
				// A name with a newline cannot be sent on a line.
				if ss, ok := w.src.(streamSource); ok && !d.compress && !strings.Contains(file, "\n") {
					var ferr error
					if err, ferr = d.stream(gctx, ss, file, c, more, finish, dst); ferr != nil {
						return ferr
					}
				} else {
					before := c.got
					err = d.fetch(gctx, w.src, file, c, dst)
					if ferr := finish(c, c.got-before, err); ferr != nil {
						return ferr
					}
				}
				if err == nil || gctx.Err() != nil {
					failures = 0
					dialFailing = time.Time{}
					continue
				}
				if errors.Is(err, errDial) && w.own {
					if dialFailing.IsZero() {
						dialFailing = time.Now()
					} else if time.Since(dialFailing) > cmp.Or(d.patience, dialPatience) {
						return nil
					}
				}
				// Give the link (and the communicator's reconnect) a moment.
				failures++
				delay := d.retryDelay
				if delay <= 0 {
					delay = 500 * time.Millisecond
				}
				delay = min(delay<<min(failures-1, 4), 8*time.Second)
				select {
				case <-time.After(delay):
				case <-gctx.Done():
				}
			}
			return nil
		}
	}
	for _, w := range ws {
		g.Go(work(w))
	}
	if d.more != nil {
		// g.Go from a goroutine g still waits for is safe.
		g.Go(func() error {
			for _, w := range d.more(gctx) {
				g.Go(work(w))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		// The workers also stop, without an error, when ctx ends.
		return err
	}
	if len(queue) > 0 || carve.next < size {
		// Every channel on a connection of our own gave up and there were
		// none on the communicator's.
		first := carve.next
		if len(queue) > 0 {
			first = queue[0].off
		}
		return fmt.Errorf("no channel could fetch bytes %d-%d of %s", first, size-1, file)
	}
	return nil
}

// fetch copies the part of range c that has not arrived yet into dst over
// src; c.got counts what arrived.
func (d *downloader) fetch(ctx context.Context, src source, file string, c *chunk, dst *os.File) error {
	d.ranges.Add(1)
	base := c.off + c.got
	w := d.rangeWriter(c, dst)
	defer func() {
		// What arrived before the channel ended is kept: SSH delivers
		// bytes intact or not at all. A channel that broke the protocol
		// (sent too much, or w failed) has its range fetched whole again.
		if w.err != nil {
			c.dirty = true
			c.got = 0
			return
		}
		c.got += w.pos
	}()
	stderr := &remotecmd.LimitedBuffer{B: &bytes.Buffer{}, Max: 4 << 10}
	command := rangeCommand(file, base, c.n-c.got, d.compress)

	var status int
	var derr error
	if d.compress {
		pr, pw := io.Pipe()
		decoded := make(chan error, 1)
		go func() {
			dec, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
			if err != nil {
				pr.CloseWithError(err)
				decoded <- err
				return
			}
			defer dec.Close()
			_, err = io.Copy(w, dec)
			if err != nil {
				err = fmt.Errorf("decompressing the range: %w", err)
			}
			// Unblock the sender whatever happened.
			pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
			decoded <- err
		}()
		var err error
		status, err = src.run(ctx, command, &drainOnError{w: pw}, stderr)
		pw.Close()
		if err != nil {
			pr.Close()
			<-decoded
			return err
		}
		derr = <-decoded
	} else {
		// A writer that fails would stop the communicator reading the
		// channel, and the remote command would never end: drain instead
		// (w keeps its error).
		var err error
		status, err = src.run(ctx, command, &drainOnError{w: w}, stderr)
		if err != nil {
			return err
		}
	}
	msg := strings.TrimSpace(stderr.B.String())
	switch {
	case status == packersdk.CmdDisconnect:
		return fmt.Errorf("the SSH connection dropped during the range (received %d of %d bytes)", w.pos, w.limit)
	case w.err != nil:
		return w.err
	case derr != nil && status == 0:
		return derr
	case status != 0 || w.pos != w.limit:
		e := fmt.Sprintf("received %d of %d bytes", w.pos, w.limit)
		if status != 0 {
			e += fmt.Sprintf("; the file command exited with status %d", status)
		}
		if msg != "" {
			e += ": " + msg
		}
		return errors.New(e)
	}
	return nil
}

// rangeWriter writes what is still missing of range c into dst, telling
// d.progress of new bytes.
func (d *downloader) rangeWriter(c *chunk, dst *os.File) *rangeWriter {
	w := &rangeWriter{f: dst, base: c.off + c.got, limit: c.n - c.got, skipZeros: !c.dirty}
	got := c.got
	w.report = func(pos int64) {
		pos += got
		if pos > c.reported && d.progress != nil {
			d.progress(pos - c.reported)
		}
		if pos > c.reported {
			c.reported = pos
		}
	}
	return w
}

// rangeWriter writes a stream at its place in the file. With skipZeros,
// all-zero blocks are not written (the file was truncated to its size, so
// they read as zeros and stay holes).
type rangeWriter struct {
	f         io.WriterAt
	base      int64
	limit     int64
	pos       int64
	skipZeros bool
	report    func(pos int64)
	err       error
}

func (w *rangeWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.pos+int64(len(p)) > w.limit {
		w.err = fmt.Errorf("the channel sent more than the %d bytes asked for", w.limit)
		return 0, w.err
	}
	if err := writeSparse(w.f, p, w.base+w.pos, w.skipZeros); err != nil {
		w.err = err
		return 0, err
	}
	w.pos += int64(len(p))
	if w.report != nil {
		w.report(w.pos)
	}
	return len(p), nil
}

// drainOnError passes writes on until one fails, then swallows the rest, so a
// remote command whose output is no longer wanted can still run to its end.
type drainOnError struct {
	w      io.Writer
	failed bool
}

func (d *drainOnError) Write(p []byte) (int, error) {
	if !d.failed {
		if _, err := d.w.Write(p); err != nil {
			d.failed = true
		}
	}
	return len(p), nil
}
