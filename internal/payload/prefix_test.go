package payload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPrefixTrackerOutOfOrder(t *testing.T) {
	tr := newPrefixTracker(10)
	steps := []struct {
		off, n, want int64
	}{
		{4, 2, 0}, // beyond a gap: the prefix stays
		{8, 2, 0},
		{2, 2, 0},
		{0, 2, 6}, // fills the gap: the prefix runs through 0-2, 2-4, 4-6
		{0, 2, 6}, // a range reported twice changes nothing
		{6, 2, 10},
		{8, 2, 10},
	}
	for i, s := range steps {
		tr.complete(s.off, s.n)
		if got := tr.completed(); got != s.want {
			t.Fatalf("step %d: complete(%d, %d): prefix %d, want %d", i, s.off, s.n, got, s.want)
		}
	}
	if end, err := tr.wait(context.Background(), 10); err != io.EOF || end != 10 {
		t.Fatalf("wait at the end = %d, %v; want 10, EOF", end, err)
	}
}

// checkedReaderAt fails the test if anything reads beyond the completed
// prefix.
type checkedReaderAt struct {
	t   *testing.T
	tr  *prefixTracker
	r   io.ReaderAt
	bad atomic.Bool
}

func (c *checkedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > c.tr.completed() {
		c.bad.Store(true)
	}
	return c.r.ReadAt(p, off)
}

func TestPrefixReaderWaitsForCompletedRanges(t *testing.T) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	tr := newPrefixTracker(int64(len(data)))
	src := &checkedReaderAt{t: t, tr: tr, r: bytes.NewReader(data)}
	var read atomic.Int64
	got := make(chan []byte, 1)
	go func() {
		var out []byte
		buf := make([]byte, 64)
		r := &prefixReader{ctx: context.Background(), t: tr, f: src}
		for {
			n, err := r.Read(buf)
			out = append(out, buf[:n]...)
			read.Add(int64(n))
			if err != nil {
				got <- out
				return
			}
		}
	}()
	// Ranges of 100 bytes arrive in reverse order: the reader gets nothing
	// until the first one is there.
	for off := int64(900); off > 0; off -= 100 {
		tr.complete(off, 100)
	}
	time.Sleep(20 * time.Millisecond)
	if n := read.Load(); n != 0 {
		t.Fatalf("the reader read %d bytes before the first range arrived", n)
	}
	tr.complete(0, 100)
	select {
	case out := <-got:
		if !bytes.Equal(out, data) {
			t.Fatal("the reader's bytes differ from the file")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader did not reach the end once every range arrived")
	}
	if src.bad.Load() {
		t.Fatal("the reader read beyond the completed prefix")
	}
}

func TestPrefixReaderFailsWithTheDownload(t *testing.T) {
	tr := newPrefixTracker(100)
	tr.complete(0, 10)
	errc := make(chan error, 1)
	go func() {
		r := &prefixReader{ctx: context.Background(), t: tr, f: bytes.NewReader(make([]byte, 100))}
		_, err := io.Copy(io.Discard, r)
		errc <- err
	}()
	boom := errors.New("bytes 10-19 failed 3 times")
	time.Sleep(20 * time.Millisecond)
	tr.fail(boom)
	select {
	case err := <-errc:
		if !errors.Is(err, boom) {
			t.Fatalf("the reader ended with %v, want the download's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the download's failure did not wake the reader")
	}
}

func TestPrefixReaderEndsWithContext(t *testing.T) {
	tr := newPrefixTracker(100)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		r := &prefixReader{ctx: ctx, t: tr, f: bytes.NewReader(make([]byte, 100))}
		_, err := r.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the reader ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelling the context did not wake the reader")
	}
}

// hashWhileDownloading downloads src with a tracker and hashes the completed
// prefix as it grows; it returns the hash and whether the hash ever read
// beyond completed ranges.
func hashWhileDownloading(t *testing.T, d *downloader, src, dstPath string, size int64, consumed *atomic.Int64) (string, bool, error) {
	t.Helper()
	dst, err := os.Create(dstPath)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	d.tracker = newPrefixTracker(size)
	checked := &checkedReaderAt{t: t, tr: d.tracker, r: dst}
	type result struct {
		sum string
		err error
	}
	hashed := make(chan result, 1)
	go func() {
		r := &prefixReader{ctx: context.Background(), t: d.tracker, f: checked}
		s, err := hashReader(io.TeeReader(r, writerFunc(func(p []byte) (int, error) {
			if consumed != nil {
				consumed.Add(int64(len(p)))
			}
			return len(p), nil
		})))
		hashed <- result{s, err}
	}()
	if err := d.download(context.Background(), src, size, dst); err != nil {
		if r := <-hashed; r.err == nil {
			t.Fatalf("the download failed (%v) but hashing its prefix succeeded", err)
		}
		return "", checked.bad.Load(), err
	}
	r := <-hashed
	if r.err != nil {
		t.Fatalf("hashing the downloaded prefix: %v", r.err)
	}
	return r.sum, checked.bad.Load(), nil
}

func TestHashFollowsDownloadThroughRetries(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("compress=%v", compress), func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "remote.img")
			want := randomFile(t, src, 3<<20+777, 5)
			sum := sha256.Sum256(want)
			// The first attempt of two ranges stops short (a dropped
			// channel); the rest of them is fetched again.
			var failed [2]atomic.Bool
			comm := &localComm{Stdout: func(cmd string, w io.Writer) io.Writer {
				for i, off := range []string{" skip=0 ", " skip=1572864 "} {
					if strings.Contains(cmd, off) && failed[i].CompareAndSwap(false, true) {
						if compress {
							// A compressed stream cut short.
							return &failingWriter{w: w, left: 100}
						}
						return &failingWriter{w: w, left: 200 << 10}
					}
				}
				return w
			}}
			d := &downloader{comm: comm, channels: 3, chunkSize: 512 << 10, compress: compress}
			got, bad, err := hashWhileDownloading(t, d, src, filepath.Join(dir, "local"), int64(len(want)), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !failed[0].Load() || !failed[1].Load() {
				t.Fatal("the ranges meant to fail were not fetched")
			}
			if bad {
				t.Fatal("the hash read beyond the completed ranges")
			}
			if got != hex.EncodeToString(sum[:]) {
				t.Fatal("the hash over the completed prefix differs from the source's: a retried range leaked its failed attempt")
			}
		})
	}
}

func TestHashFollowsDownloadFailure(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 2<<20, 6)
	d := downloaderFailingAt(1048576)
	_, bad, err := hashWhileDownloading(t, d, src, filepath.Join(dir, "local"), int64(len(want)), nil)
	if err == nil || !strings.Contains(err.Error(), "failed 4 times") {
		t.Fatalf("want the download to fail, got %v", err)
	}
	if bad {
		t.Fatal("the hash read beyond the completed ranges")
	}
}

// TestHashProgressesDuringDownload holds the last range back until the hash
// has consumed every byte before it: the hash does not wait for the whole
// download.
func TestHashProgressesDuringDownload(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("compress=%v", compress), func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "remote.img")
			const chunk = 256 << 10
			want := randomFile(t, src, 10*chunk+99, 7)
			sum := sha256.Sum256(want)
			last := int64(len(want)) / chunk * chunk
			var consumed, atDeadline atomic.Int64
			var sawPrefix atomic.Bool
			comm := &localComm{Before: func(cmd string) {
				if !strings.Contains(cmd, " skip="+strconv.FormatInt(last, 10)+" ") {
					return
				}
				for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					if consumed.Load() == last {
						sawPrefix.Store(true)
						return
					}
				}
				atDeadline.Store(consumed.Load())
			}}
			d := &downloader{comm: comm, channels: 3, chunkSize: chunk, compress: compress}
			got, bad, err := hashWhileDownloading(t, d, src, filepath.Join(dir, "local"), int64(len(want)), &consumed)
			if err != nil {
				t.Fatal(err)
			}
			if !sawPrefix.Load() {
				t.Fatalf("while the last range was held back the hash consumed %d bytes, not the %d before it", atDeadline.Load(), last)
			}
			if bad || got != hex.EncodeToString(sum[:]) {
				t.Fatalf("hash mismatch (read beyond the prefix: %v)", bad)
			}
		})
	}
}
