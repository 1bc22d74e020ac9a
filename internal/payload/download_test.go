package payload

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func randomFile(t testing.TB, path string, size int, seed int64) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDownloadParallelRanges(t *testing.T) {
	for _, compress := range []bool{false, true} {
		dir := t.TempDir()
		src := filepath.Join(dir, "remote.img")
		// Not a multiple of the chunk size, so the last range is short.
		want := randomFile(t, src, 5<<20+12345, 1)
		comm := &localComm{}
		var progress atomic.Int64
		d := &downloader{comm: comm, channels: 4, chunkSize: 256 << 10, compress: compress, progress: func(n int64) { progress.Add(n) }}
		dst, err := os.Create(filepath.Join(dir, "local.partial"))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.download(context.Background(), src, int64(len(want)), dst); err != nil {
			t.Fatalf("compress=%v: %v", compress, err)
		}
		dst.Close()
		got, _ := os.ReadFile(dst.Name())
		if !bytes.Equal(got, want) {
			t.Fatalf("compress=%v: the download differs from the source", compress)
		}
		if progress.Load() != int64(len(want)) {
			t.Fatalf("compress=%v: progress reported %d bytes of %d", compress, progress.Load(), len(want))
		}
		chunks := (len(want) + 256<<10 - 1) / (256 << 10)
		var dds int
		for _, c := range comm.Commands() {
			if strings.HasPrefix(c, "dd ") {
				dds++
				if strings.Contains(c, "zstd") != compress {
					t.Fatalf("compress=%v: range command %q", compress, c)
				}
			}
		}
		if dds != chunks {
			t.Fatalf("compress=%v: %d range commands for %d ranges", compress, dds, chunks)
		}
		if p := comm.Peak(); p > 4 {
			t.Fatalf("%d channels were open at once, more than the 4 asked for", p)
		}
	}
}

// failingWriter delivers only half of a range, then nothing more.
type failingWriter struct {
	w    io.Writer
	left int
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.left <= 0 {
		return len(p), nil
	}
	if len(p) > f.left {
		p = p[:f.left]
	}
	f.left -= len(p)
	f.w.Write(p)
	return len(p), nil
}

func TestDownloadRetriesAShortRange(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 2<<20, 2)
	var failed atomic.Bool
	comm := &localComm{Stdout: func(cmd string, w io.Writer) io.Writer {
		if strings.Contains(cmd, " skip=524288 ") && failed.CompareAndSwap(false, true) {
			return &failingWriter{w: w, left: 1000}
		}
		return w
	}}
	var progress atomic.Int64
	d := &downloader{comm: comm, channels: 2, chunkSize: 512 << 10, progress: func(n int64) { progress.Add(n) }}
	dst, _ := os.Create(filepath.Join(dir, "local"))
	if err := d.download(context.Background(), src, int64(len(want)), dst); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst.Name())
	if !bytes.Equal(got, want) {
		t.Fatal("the retried download differs from the source")
	}
	if !failed.Load() || len(comm.Commands()) != 5 {
		t.Fatalf("want 4 ranges and one retry, ran %d commands", len(comm.Commands()))
	}
	// The retry asks only for what the first attempt did not bring.
	if !slices.ContainsFunc(comm.Commands(), func(c string) bool { return strings.Contains(c, " skip=525288 count=523288 ") }) {
		t.Fatalf("the retry did not resume after the 1000 bytes that arrived: %q", comm.Commands())
	}
	if progress.Load() != int64(len(want)) {
		t.Fatalf("progress counted %d bytes of %d: a retry must not count twice", progress.Load(), len(want))
	}
}

// downloaderFailingAt is a downloader over 512 KiB ranges on 2 channels
// whose range at offset breaks off after 10 bytes on every attempt (each
// resuming after the bytes the last one brought).
func downloaderFailingAt(offset int64) *downloader {
	comm := &localComm{Stdout: func(cmd string, w io.Writer) io.Writer {
		if s := skipOf(cmd); s >= offset && s < offset+512<<10 {
			return &failingWriter{w: w, left: 10}
		}
		return w
	}}
	return &downloader{comm: comm, channels: 2, chunkSize: 512 << 10, retryDelay: time.Millisecond}
}

func TestDownloadGivesUpOnARangeThatKeepsFailing(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 2<<20, 3)
	d := downloaderFailingAt(1048576)
	dst, _ := os.Create(filepath.Join(dir, "local"))
	err := d.download(context.Background(), src, int64(len(want)), dst)
	// Each attempt resumes after the 10 bytes the last one brought.
	if err == nil || !strings.Contains(err.Error(), "failed 4 times") || !strings.Contains(err.Error(), "received 10 of 524258 bytes") {
		t.Fatalf("want a clear error after 4 attempts, got %v", err)
	}
}

func TestDownloadReportsRemoteError(t *testing.T) {
	dir := t.TempDir()
	d := &downloader{comm: &localComm{}, channels: 2, chunkSize: 1 << 20}
	dst, _ := os.Create(filepath.Join(dir, "local"))
	err := d.download(context.Background(), filepath.Join(dir, "missing.img"), 3<<20, dst)
	if err == nil || !strings.Contains(err.Error(), "missing.img") || !strings.Contains(err.Error(), "No such file") {
		t.Fatalf("want dd's error, got %v", err)
	}
}

func TestDownloadHonoursCancellation(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	randomFile(t, src, 4<<20, 4)
	ctx, cancel := context.WithCancel(context.Background())
	comm := &localComm{Before: func(cmd string) {
		if strings.Contains(cmd, " skip=1048576 ") {
			cancel()
		}
	}}
	d := &downloader{comm: comm, channels: 1, chunkSize: 1 << 20}
	dst, _ := os.Create(filepath.Join(dir, "local"))
	if err := d.download(ctx, src, 4<<20, dst); err != context.Canceled {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if n := len(comm.Commands()); n > 2 {
		t.Fatalf("%d ranges started after cancellation", n-2)
	}
}

func TestZstdDecoderHandlesConcatenatedRanges(t *testing.T) {
	// Each range is its own zstd frame; the decoder must not expect one.
	var buf bytes.Buffer
	for _, s := range []string{"first ", "second"} {
		enc, _ := zstd.NewWriter(&buf)
		enc.Write([]byte(s))
		enc.Close()
	}
	dec, _ := zstd.NewReader(&buf)
	defer dec.Close()
	b, err := io.ReadAll(dec)
	if err != nil || string(b) != "first second" {
		t.Fatalf("%q %v", b, err)
	}
}

// A channel that sends more bytes than its range asked for fails the range
// (three times here, so the download fails and says why).
func TestDownloadRangeLongerThanAskedFails(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	randomFile(t, src, 1<<20, 5)
	comm := &localComm{Stdout: func(cmd string, w io.Writer) io.Writer {
		return writerFunc(func(p []byte) (int, error) {
			if _, err := w.Write(p); err != nil {
				return 0, err
			}
			// Every byte twice: the range is twice as long as asked.
			return w.Write(p)
		})
	}}
	d := &downloader{comm: comm, channels: 1, chunkSize: 512 << 10, retryDelay: time.Millisecond}
	dst, _ := os.Create(filepath.Join(dir, "local"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := d.download(ctx, src, 1<<20, dst)
	if err == nil || !strings.Contains(err.Error(), "more than the 524288 bytes asked for") {
		t.Fatalf("want the overlong range reported, got %v", err)
	}
}

// skipOf is the byte offset a range command starts at.
func skipOf(cmd string) int64 {
	_, rest, ok := strings.Cut(cmd, " skip=")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func TestRangeCarver(t *testing.T) {
	for _, tc := range []struct {
		size     int64
		channels int
	}{{352 << 20, 16}, {1 << 30, 4}, {10 << 20, 4}, {3 << 20, 8}, {512 << 10, 4}, {(64 << 20) + 12345, 5}} {
		longest := chooseChunk(tc.size, tc.channels, false)
		c := &rangeCarver{size: tc.size, longest: longest, channels: tc.channels}
		var lens []int64
		next := int64(0)
		for {
			off, n, ok := c.take(tc.channels)
			if !ok {
				break
			}
			if off != next || n <= 0 || n > longest+minChunk {
				t.Fatalf("size %d: range %d at %d+%d (want it at %d, at most %d bytes long)", tc.size, len(lens), off, n, next, longest+minChunk)
			}
			if n < minChunk && off+n != tc.size {
				t.Fatalf("size %d: range %d is %d bytes, shorter than %d and not the last", tc.size, len(lens), n, minChunk)
			}
			next += n
			lens = append(lens, n)
		}
		if next != tc.size {
			t.Fatalf("size %d: the ranges cover %d bytes", tc.size, next)
		}
		if tc.size < 64<<20 {
			continue
		}
		// Lengths never grow, and the last ones are shorter than longest.
		for i := 1; i < len(lens)-1; i++ {
			if lens[i] > lens[i-1] {
				t.Errorf("size %d: range %d (%d bytes) is longer than the one before (%d)", tc.size, i, lens[i], lens[i-1])
			}
		}
		if tail := lens[len(lens)-2]; tail >= longest {
			t.Errorf("size %d: the ranges near the end are not shorter than %d: %v", tc.size, longest, lens)
		}
	}
	fixed := &rangeCarver{size: 10<<20 + 1, longest: 1 << 20, fixed: true, channels: 4}
	if n := fixed.count(); n != 11 {
		t.Errorf("fixed 1 MiB ranges of 10 MiB + 1 byte: %d ranges, want 11", n)
	}
}
