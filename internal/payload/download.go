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
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/klauspost/compress/zstd"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remote"
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
	lastErr  error
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
	workers := d.channels
	if workers < 1 {
		workers = 1
	}
	if workers > len(queue) {
		workers = len(queue)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		inFlight int
		fatal    error
	)
	// Wake waiting workers when ctx ends.
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		cond.Broadcast()
		mu.Unlock()
	})
	defer stop()

	next := func() *chunk {
		mu.Lock()
		defer mu.Unlock()
		for {
			if fatal != nil || ctx.Err() != nil {
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
	finish := func(c *chunk, err error) {
		mu.Lock()
		defer mu.Unlock()
		inFlight--
		defer cond.Broadcast()
		if err == nil {
			// fetch returns only once every byte of the range is written.
			if d.tracker != nil {
				d.tracker.complete(c.off, c.n)
			}
			return
		}
		c.lastErr = err
		c.attempt++
		if ctx.Err() != nil {
			return
		}
		if c.attempt >= chunkAttempts {
			if fatal == nil {
				fatal = fmt.Errorf("bytes %d-%d of %s failed %d times, last: %w", c.off, c.off+c.n-1, file, c.attempt, err)
				cancel()
			}
			return
		}
		queue = append(queue, c)
	}

	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := next(); c != nil; c = next() {
				finish(c, d.fetch(ctx, file, c, dst))
			}
		}()
	}
	wg.Wait()
	if fatal != nil {
		return fatal
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
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
	stderr := &remote.LimitedBuffer{B: &bytes.Buffer{}, Max: 4 << 10}
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

// writeSparse writes p at off; with skipZeros the all-zero parts of p that
// cover whole aligned blocks (and any all-zero edge pieces) are skipped.
func writeSparse(f io.WriterAt, p []byte, off int64, skipZeros bool) error {
	if !skipZeros {
		_, err := f.WriteAt(p, off)
		return err
	}
	start := -1 // start in p of pending non-zero data
	for i := 0; i < len(p); {
		// The segment up to the next block boundary.
		end := i + int(holeBlock-(off+int64(i))%holeBlock)
		if end > len(p) {
			end = len(p)
		}
		if isZero(p[i:end]) {
			if start >= 0 {
				if _, err := f.WriteAt(p[start:i], off+int64(start)); err != nil {
					return err
				}
				start = -1
			}
		} else if start < 0 {
			start = i
		}
		i = end
	}
	if start >= 0 {
		if _, err := f.WriteAt(p[start:], off+int64(start)); err != nil {
			return err
		}
	}
	return nil
}

var zeroBlock [holeBlock]byte

func isZero(p []byte) bool {
	for len(p) > 0 {
		n := len(p)
		if n > holeBlock {
			n = holeBlock
		}
		if !bytes.Equal(p[:n], zeroBlock[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
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

// progressReader feeds ui.TrackProgress: each Read returns as many bytes as
// have arrived since the last one (their content is meaningless), and EOF once
// Close is called and everything is reported. Reads return at most every
// interval: in a plugin each Read of the tracked stream is a call to Packer.
type progressReader struct {
	interval time.Duration

	mu      sync.Mutex
	cond    *sync.Cond
	pending int64
	closed  bool
	last    time.Time
}

func newProgressReader() *progressReader {
	p := &progressReader{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *progressReader) Add(n int64) {
	p.mu.Lock()
	p.pending += n
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *progressReader) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cond.Broadcast()
	return nil
}

func (p *progressReader) Read(b []byte) (int, error) {
	p.mu.Lock()
	// Caught up: wait out the interval so that the next Read carries more.
	if wait := p.interval - time.Since(p.last); wait > 0 && !p.closed && p.pending < int64(len(b)) {
		p.mu.Unlock()
		time.Sleep(wait)
		p.mu.Lock()
	}
	defer p.mu.Unlock()
	for p.pending == 0 && !p.closed {
		p.cond.Wait()
	}
	p.last = time.Now()
	if p.pending == 0 {
		return 0, io.EOF
	}
	n := int64(len(b))
	if n > p.pending {
		n = p.pending
	}
	p.pending -= n
	return int(n), nil
}
