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

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// streamDepth is how many ranges a streaming channel has asked for at once:
// the one arriving and the next, so the host starts the next as soon as the
// current one is out.
const streamDepth = 2

// errUnstarted marks a range that was asked for on a channel that ended
// before the host began sending it: it goes back to the queue without
// counting as a failed attempt.
var errUnstarted = errors.New("the channel ended before the range began")

// streamSource is a source that can run one command fed with input while it
// runs: a connection of our own (Packer's communicator waits for a command's
// input to end before it reports the command's end, so a channel whose host
// went away would never end).
type streamSource interface {
	stream(ctx context.Context) (*streamSession, error)
}

// rangeStream is one channel serving ranges in turn (streamCommand): it asks
// for ranges on the command's input and sorts the output into them. Its Write
// is the command's output.
type rangeStream struct {
	d    *downloader
	dst  *os.File
	more func() *chunk // a range to ask for next, or nil
	// done is told that a range fully arrived.
	done func(c *chunk)

	mu      sync.Mutex
	in      io.WriteCloser
	pending []*chunk // asked for, in order; pending[0] is arriving
	w       *rangeWriter
	err     error // the first local write failure or protocol error
	inEnded bool
	over    bool // the command ended: later output is dropped
}

// ask asks for more ranges, up to streamDepth, and ends the input when there
// is nothing left to ask for. s.mu is held.
func (s *rangeStream) ask() {
	if s.inEnded {
		return
	}
	for len(s.pending) < streamDepth {
		c := s.more()
		if c == nil {
			break
		}
		s.pending = append(s.pending, c)
		s.d.ranges.Add(1)
		// A failed write means the channel is gone: its end tells.
		fmt.Fprintf(s.in, "%d %d\n", c.off+c.got, c.n-c.got)
	}
	if len(s.pending) == 0 {
		s.endInput()
	}
}

func (s *rangeStream) endInput() {
	if !s.inEnded {
		s.inEnded = true
		s.in.Close()
	}
}

// fail keeps the first error, stops asking for ranges and drops the rest of
// the output. s.mu is held.
func (s *rangeStream) fail(err error) {
	if s.err == nil {
		s.err = err
	}
	s.endInput()
}

func (s *rangeStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	for len(p) > 0 && s.err == nil && !s.over {
		if len(s.pending) == 0 {
			s.fail(fmt.Errorf("the channel sent %d bytes more than the ranges asked for", len(p)))
			break
		}
		c := s.pending[0]
		if s.w == nil {
			s.w = s.d.rangeWriter(c, s.dst)
		}
		k := min(int64(len(p)), s.w.limit-s.w.pos)
		if _, err := s.w.Write(p[:k]); err != nil {
			s.fail(err)
			break
		}
		p = p[k:]
		if s.w.pos == s.w.limit {
			c.got += s.w.pos
			s.w = nil
			s.pending = s.pending[1:]
			s.done(c)
			s.ask()
		}
	}
	// Whatever is not wanted is dropped, so the command runs to its end.
	return n, nil
}

// settle ends the stream after its command ended: the range arriving keeps
// what arrived, and every range still asked for goes back with why.
func (s *rangeStream) settle(sessionErr error, finish func(c *chunk, got int64, err error) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.over = true
	var ferr error
	for i, c := range s.pending {
		var got int64
		err := sessionErr
		if i == 0 && s.w != nil {
			if s.w.err != nil {
				// The write failed: what is on disk is not known.
				c.dirty = true
				c.got = 0
			} else {
				got = s.w.pos
				c.got += got
			}
		}
		if i > 0 {
			err = fmt.Errorf("%w: %w", errUnstarted, sessionErr)
		}
		if e := finish(c, got, err); e != nil && ferr == nil {
			ferr = e
		}
	}
	s.pending = nil
	s.w = nil
	return ferr
}

// stream fetches first, and then whatever more hands it, over one channel of
// src running streamCommand. finish is told of every range it took. It
// returns why the channel ended early (nil when it ran out of ranges) and
// the error from finish that fails the download, if any.
func (d *downloader) stream(ctx context.Context, src streamSource, file string, first *chunk, more func() *chunk, finish func(c *chunk, got int64, err error) error, dst *os.File) (err, fatal error) {
	s := &rangeStream{d: d, dst: dst, more: more}
	s.done = func(c *chunk) {
		if e := finish(c, c.n, nil); e != nil && fatal == nil {
			fatal = e
		}
	}
	stderr := &remotecmd.LimitedBuffer{B: &bytes.Buffer{}, Max: 4 << 10}
	ss, err := src.stream(ctx)
	if err != nil {
		s.pending = []*chunk{first}
		return err, s.settle(err, finish)
	}
	ss.stdout.set(s)
	ss.stderr.set(stderr)
	s.mu.Lock()
	s.in = ss.in
	s.pending = []*chunk{first}
	d.ranges.Add(1)
	fmt.Fprintf(ss.in, "%s\n%d %d\n", file, first.off+first.got, first.n-first.got)
	s.ask()
	s.mu.Unlock()

	status, err := ss.wait(ctx)
	s.mu.Lock()
	s.endInput()
	left, local := len(s.pending), s.err
	var arrived, want int64
	if s.w != nil {
		arrived, want = s.w.pos, s.w.limit
	} else if left > 0 {
		want = s.pending[0].n - s.pending[0].got
	}
	s.mu.Unlock()

	msg := strings.TrimSpace(stderr.B.String())
	switch {
	case err != nil:
	case status == packersdk.CmdDisconnect:
		err = fmt.Errorf("the SSH connection dropped during the range (received %d of %d bytes)", arrived, want)
	case local != nil:
		err = local
	case status != 0 || left > 0:
		e := fmt.Sprintf("received %d of %d bytes", arrived, want)
		if status != 0 {
			e += fmt.Sprintf("; the file command exited with status %d", status)
		}
		if msg != "" {
			e += ": " + msg
		}
		err = errors.New(e)
	}
	if e := s.settle(err, finish); e != nil && fatal == nil {
		fatal = e
	}
	return err, fatal
}
