package payload

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func TestWriteSparseLeavesHoles(t *testing.T) {
	dir := t.TempDir()
	f, _ := os.Create(filepath.Join(dir, "f"))
	defer f.Close()
	size := int64(8 << 20)
	f.Truncate(size)
	data := make([]byte, size)
	// Non-zero bytes at unaligned places, straddling block boundaries.
	for _, off := range []int{0, 4095, 4096, 1<<20 + 17, 5<<20 - 1, int(size) - 1} {
		data[off] = 0xab
	}
	// Written in odd pieces, as a stream arrives.
	for off := 0; off < len(data); {
		n := 10007
		if off+n > len(data) {
			n = len(data) - off
		}
		if err := writeSparse(f, data[off:off+n], int64(off), true); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, data) {
		t.Fatal("the sparse write changed the data")
	}
	if a := allocated(t, f.Name()); a > 64<<10 {
		t.Fatalf("%d bytes allocated for 6 non-zero bytes", a)
	}
}

// writeLog records each WriteAt into a buffer.
type writeLog struct {
	buf    []byte
	writes []int
}

func (w *writeLog) WriteAt(p []byte, off int64) (int, error) {
	w.writes = append(w.writes, len(p))
	copy(w.buf[off:], p)
	return len(p), nil
}

func TestWriteSparseSplitsLargeWrites(t *testing.T) {
	data := bytes.Repeat([]byte{1, 2, 3, 4}, 3*maxWrite/4+100)
	data = append(data, make([]byte, 2*holeBlock)...) // a hole
	data = append(data, bytes.Repeat([]byte{5}, maxWrite+1)...)
	for _, skip := range []bool{false, true} {
		w := &writeLog{buf: make([]byte, len(data)+7)}
		if err := writeSparse(w, data, 7, skip); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w.buf[7:], data) && !skip {
			t.Fatalf("skipZeros=%v: the data changed", skip)
		}
		total := 0
		for _, n := range w.writes {
			if n > maxWrite || n == 0 {
				t.Fatalf("skipZeros=%v: a write of %d bytes (at most %d wanted): %v", skip, n, maxWrite, w.writes)
			}
			total += n
		}
		want := len(data)
		if skip {
			want -= 2 * holeBlock
		}
		// With skipZeros the hole's edges may be written when they share
		// a block with data.
		if total < want || total > len(data) {
			t.Fatalf("skipZeros=%v: %d bytes written, want %d", skip, total, want)
		}
		if len(w.writes) < 4 {
			t.Fatalf("skipZeros=%v: %d writes for %d bytes in two runs: %v", skip, len(w.writes), len(data), w.writes)
		}
	}
}

// decodeFile decodes the zstd file src into dst with decodeSparse.
func decodeFile(t *testing.T, src, dst string) (int64, string, []byte, error) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	return decodeSparse(in, dst, true)
}

func TestDecodeSparse(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "sd.img")
	makeSDImage(t, img, 64, 3)
	zst := filepath.Join(dir, "sd.img.zst")
	zstdFile(t, img, zst)
	out := filepath.Join(dir, "out.img")
	size, sum, first, err := decodeFile(t, zst, out)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(img)
	got, _ := os.ReadFile(out)
	ws := sha256.Sum256(want)
	if !bytes.Equal(got, want) || size != int64(len(want)) || sum != hex.EncodeToString(ws[:]) {
		t.Fatalf("decompressed image differs (size %d, sum %s)", size, sum)
	}
	if err := checkMBR(first); err != nil {
		t.Fatalf("the test image's MBR: %v", err)
	}
	if a := allocated(t, out); a > size/4 {
		t.Fatalf("not sparse: %d of %d bytes allocated", a, size)
	}

	// A truncated stream is an error, not a short image.
	b, _ := os.ReadFile(zst)
	os.WriteFile(zst, b[:len(b)/2], 0o644)
	if _, _, _, err := decodeFile(t, zst, out); err == nil {
		t.Fatal("a truncated .zst decompressed without error")
	}
}

// failAt fails every write at or beyond its offset.
type failAt struct {
	f   io.WriterAt
	off int64
}

func (w failAt) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > w.off {
		return 0, errors.New("no space left on device")
	}
	return w.f.WriteAt(p, off)
}

// A failed write ends the copy with that error, without reading the rest.
func TestCopySparseStopsOnWriteError(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var read atomic.Int64
	src := readerFunc(func(p []byte) (int, error) {
		if read.Load() >= 1<<30 {
			return 0, io.EOF
		}
		for i := range p {
			p[i] = 0xa5
		}
		read.Add(int64(len(p)))
		return len(p), nil
	})
	_, _, err = copySparse(failAt{f: f, off: 8 << 20}, src, sha256.New())
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("want the write error, got %v", err)
	}
	if read.Load() > 64<<20 {
		t.Fatalf("read %d bytes after the write failed", read.Load())
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
