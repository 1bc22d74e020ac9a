package payload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/klauspost/compress/zstd"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

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
