package payload

import (
	"io"
	"sync"
	"time"
)

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
