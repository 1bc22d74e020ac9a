package payload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

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
	// chunkAttempts is how often one range is tried before the download fails.
	chunkAttempts = 3
)

// downloader fetches one remote file over several SSH channels at once. Each
// channel is a separate remote command printing one byte range of the file;
// workers take ranges from a shared queue, so a slow channel holds up at most
// the range it is on.
type downloader struct {
	comm     packersdk.Communicator
	channels int
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
}

type chunk struct {
	off, n   int64
	attempt  int
	reported int64 // bytes already counted towards progress
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

func (d *downloader) downloadRanges(ctx context.Context, file string, size int64, dst *os.File) error {
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("preparing %s: %w", dst.Name(), err)
	}
	if size == 0 {
		return nil
	}
	cs := d.chunkSize
	if cs <= 0 {
		cs = chooseChunk(size, d.channels, d.compress)
	}
	var queue []*chunk
	for off := int64(0); off < size; off += cs {
		n := cs
		if off+n > size {
			n = size - off
		}
		queue = append(queue, &chunk{off: off, n: n})
	}
	workers := min(max(d.channels, 1), len(queue))

	// The first range to fail for good cancels the other workers.
	g, gctx := errgroup.WithContext(ctx)
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		inFlight int
	)
	// Wake waiting workers when gctx ends.
	stop := context.AfterFunc(gctx, func() {
		mu.Lock()
		cond.Broadcast()
		mu.Unlock()
	})
	defer stop()

	next := func() *chunk {
		mu.Lock()
		defer mu.Unlock()
		for {
			if gctx.Err() != nil {
				return nil
			}
			if len(queue) > 0 {
				c := queue[0]
				queue = queue[1:]
				inFlight++
				return c
			}
			if inFlight == 0 {
				return nil
			}
			// Another worker may give its range back.
			cond.Wait()
		}
	}
	// finish records how fetching c went: it queues a failed range again
	// and returns an error once the range failed chunkAttempts times.
	finish := func(c *chunk, err error) error {
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
		c.attempt++
		if gctx.Err() != nil {
			return nil
		}
		if c.attempt >= chunkAttempts {
			return fmt.Errorf("bytes %d-%d of %s failed %d times, last: %w", c.off, c.off+c.n-1, file, c.attempt, err)
		}
		queue = append(queue, c)
		return nil
	}

	for range workers {
		g.Go(func() error {
			for c := next(); c != nil; c = next() {
				if err := finish(c, d.fetch(gctx, file, c, dst)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// The workers also stop, without an error, when ctx ends.
	return ctx.Err()
}

// fetch copies one range into dst.
func (d *downloader) fetch(ctx context.Context, file string, c *chunk, dst *os.File) error {
	w := &rangeWriter{f: dst, base: c.off, limit: c.n, skipZeros: c.attempt == 0}
	w.report = func(pos int64) {
		if pos > c.reported && d.progress != nil {
			d.progress(pos - c.reported)
		}
		if pos > c.reported {
			c.reported = pos
		}
	}
	stderr := &remotecmd.LimitedBuffer{B: &bytes.Buffer{}, Max: 4 << 10}
	cmd := &packersdk.RemoteCmd{Command: rangeCommand(file, c.off, c.n, d.compress), Stderr: stderr}

	var (
		pr      *io.PipeReader
		decoded = make(chan error, 1)
	)
	if d.compress {
		var pw *io.PipeWriter
		pr, pw = io.Pipe()
		cmd.Stdout = &drainOnError{w: pw}
		go func() {
			dec, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1))
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
		defer pr.Close()
		if err := d.comm.Start(ctx, cmd); err != nil {
			pw.Close()
			return fmt.Errorf("opening a download channel: %w", err)
		}
		go func() {
			cmd.Wait()
			pw.Close()
		}()
	} else {
		// A writer that fails would stop the communicator reading the
		// channel, and the remote command would never end: drain instead
		// (w keeps its error).
		cmd.Stdout = &drainOnError{w: w}
		if err := d.comm.Start(ctx, cmd); err != nil {
			return fmt.Errorf("opening a download channel: %w", err)
		}
		decoded <- nil
	}

	exited := make(chan int, 1)
	go func() { exited <- cmd.Wait() }()
	var status int
	select {
	case status = <-exited:
	case <-ctx.Done():
		return ctx.Err()
	}
	var derr error
	select {
	case derr = <-decoded:
	case <-ctx.Done():
		return ctx.Err()
	}
	msg := strings.TrimSpace(stderr.B.String())
	switch {
	case status == packersdk.CmdDisconnect:
		return fmt.Errorf("the SSH connection dropped during the range (received %d of %d bytes)", w.pos, c.n)
	case w.err != nil:
		return w.err
	case derr != nil && status == 0:
		return derr
	case status != 0 || w.pos != c.n:
		e := fmt.Sprintf("received %d of %d bytes", w.pos, c.n)
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
