package payload

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"golang.org/x/sync/errgroup"
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
// when conns is set, on connections of our own to the same host. Its parts:
// rangeCarver and rangeQueue (range_queue.go) cut the file and hand out the
// ranges, channelWorker (channel_worker.go) is one channel, fetch and
// rangeWriter (range_fetch.go) bring one range into the file, rangeStream
// (stream.go) many in one session, and prefixTracker (prefix.go) knows how
// much of the file's start has arrived.
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
	// hedged counts ranges asked for a second time because they held the
	// prefix back.
	hedged atomic.Int64
	// gated counts the times a channel waited for the local work to catch
	// up.
	gated atomic.Int64
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
	// race, when set, ties the range to a second request for it
	// (range_hedge.go); the rangeQueue's lock guards it.
	race *race
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
	// extra is set for a channel on a connection of our own beyond the
	// first: while the local work lags (rangeQueue.gatedLocked) it takes
	// no new range, even when none is in flight.
	extra bool
}

// conn is the connection the channel runs on: nil for the communicator's.
func (w worker) conn() any {
	if w.own {
		return w.src
	}
	return nil
}

// dialPatience is how long a channel on a connection of our own keeps
// trying to open it before it leaves the ranges to the other channels.
const dialPatience = 60 * time.Second

func (d *downloader) workers() []worker {
	var ws []worker
	for range d.channels {
		ws = append(ws, worker{src: commSource{d.comm}})
	}
	for i, c := range d.conns {
		for range max(d.connChannels, 1) {
			ws = append(ws, worker{src: c, own: true, extra: i > 0})
		}
	}
	return ws
}

// downloadRanges runs the download's channels: the first ones at once, those
// d.more brings as it returns them, all taking ranges from one rangeQueue
// until the file is complete or a range fails for good.
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

	// The first range to fail for good cancels the other channels; so
	// does the whole file's arrival, for ranges asked for a second time.
	g, gctx := errgroup.WithContext(ctx)
	wctx, arrived := context.WithCancel(gctx)
	defer arrived()
	q := newRangeQueue(wctx, file, carve, d.tracker, &d.resumed)
	q.arrived = arrived
	defer q.close()
	start := func(w worker) {
		q.addChannel()
		cw := &channelWorker{d: d, q: q, w: w, file: file, dst: dst}
		g.Go(func() error { return cw.run(wctx) })
	}
	for _, w := range ws {
		start(w)
	}
	if d.more != nil {
		// g.Go from a goroutine g still waits for is safe.
		g.Go(func() error {
			for _, w := range d.more(gctx) {
				start(w)
			}
			return nil
		})
	}
	err := g.Wait()
	d.hedged.Add(q.hedged.Load())
	d.gated.Add(q.gated.Load())
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		// The channels also stop, without an error, when ctx ends.
		return err
	}
	return q.leftover()
}
