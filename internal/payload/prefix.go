package payload

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// prefixTracker follows a file being downloaded in ranges that arrive in any
// order: it knows how long the contiguous prefix of fully arrived ranges is,
// and lets readers wait for it to grow. A range counts only once all of it
// arrived (a range that failed and is fetched again is never counted twice,
// nor early), so bytes below the prefix never change again.
type prefixTracker struct {
	mu     sync.Mutex
	cond   *sync.Cond
	size   int64
	prefix int64
	// done holds the ranges that arrived beyond the prefix: start -> end.
	done map[int64]int64
	err  error
	// read is how far a reader (the decoder, or the hash) got, once one
	// started: the prefix beyond it is the local work's backlog.
	read    atomic.Int64
	reading atomic.Bool
}

func newPrefixTracker(size int64) *prefixTracker {
	t := &prefixTracker{size: size, done: map[int64]int64{}}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// complete records that bytes [off, off+n) fully arrived.
func (t *prefixTracker) complete(off, n int64) {
	if n <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if off+n <= t.prefix {
		return
	}
	if end, ok := t.done[off]; !ok || end < off+n {
		t.done[off] = off + n
	}
	advanced := false
	for {
		end, ok := t.done[t.prefix]
		if !ok {
			break
		}
		delete(t.done, t.prefix)
		t.prefix = end
		advanced = true
	}
	if advanced {
		t.cond.Broadcast()
	}
}

// fail records that the download failed: waiting readers get err.
func (t *prefixTracker) fail(err error) {
	if err == nil {
		err = errors.New("the download failed")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
	}
	t.cond.Broadcast()
}

// completed is the length of the contiguous prefix that arrived.
func (t *prefixTracker) completed() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.prefix
}

// wait blocks until the prefix reaches beyond pos and returns its end; it
// returns io.EOF when pos is the end of the file, and an error when the
// download failed or ctx ended first.
func (t *prefixTracker) wait(ctx context.Context, pos int64) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		switch {
		case t.err != nil:
			return t.prefix, t.err
		case ctx.Err() != nil:
			return t.prefix, ctx.Err()
		case pos >= t.size:
			return t.size, io.EOF
		case t.prefix > pos:
			return t.prefix, nil
		}
		if stop == nil {
			stop = context.AfterFunc(ctx, func() {
				t.mu.Lock()
				t.cond.Broadcast()
				t.mu.Unlock()
			})
		}
		t.cond.Wait()
	}
}

// prefixReader reads a file being downloaded from its start, never beyond the
// ranges that fully arrived: it blocks until more did, and fails when the
// download fails or ctx ends. It reads from the file, so it holds no more
// than the caller's buffer.
type prefixReader struct {
	ctx context.Context
	t   *prefixTracker
	f   io.ReaderAt
	pos int64
}

func (r *prefixReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	end, err := r.t.wait(r.ctx, r.pos)
	if err != nil {
		if err != io.EOF {
			// A reader that stopped no longer paces the download.
			r.t.reading.Store(false)
		}
		return 0, err
	}
	n := int64(len(p))
	if n > end-r.pos {
		n = end - r.pos
	}
	m, err := r.f.ReadAt(p[:n], r.pos)
	r.pos += int64(m)
	r.t.reading.Store(true)
	r.t.read.Store(r.pos)
	if err == io.EOF {
		if int64(m) == n {
			err = nil
		} else {
			err = io.ErrUnexpectedEOF // the file is shorter than it was made
		}
	}
	return m, err
}

// ahead is how many bytes arrived beyond the prefix.
func (t *prefixTracker) ahead() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for start, end := range t.done {
		n += end - start
	}
	return n
}

// backlog is how much of the prefix the reader has not read yet; 0 before
// a reader started.
func (t *prefixTracker) backlog() int64 {
	if !t.reading.Load() {
		return 0
	}
	return max(t.completed()-t.read.Load(), 0)
}
