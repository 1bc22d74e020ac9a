package payload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	if progress.Load() != int64(len(want)) {
		t.Fatalf("progress counted %d bytes of %d: a retry must not count twice", progress.Load(), len(want))
	}
}

func TestDownloadGivesUpOnARangeThatKeepsFailing(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 2<<20, 3)
	comm := &localComm{Stdout: func(cmd string, w io.Writer) io.Writer {
		if strings.Contains(cmd, " skip=1048576 ") {
			return &failingWriter{w: w, left: 10}
		}
		return w
	}}
	d := &downloader{comm: comm, channels: 2, chunkSize: 512 << 10}
	dst, _ := os.Create(filepath.Join(dir, "local"))
	err := d.download(context.Background(), src, int64(len(want)), dst)
	if err == nil || !strings.Contains(err.Error(), "failed 3 times") || !strings.Contains(err.Error(), "received 10 of 524288 bytes") {
		t.Fatalf("want a clear error after 3 attempts, got %v", err)
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

func TestDecompressSparse(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "sd.img")
	makeSDImage(t, img, 64, 3)
	zst := filepath.Join(dir, "sd.img.zst")
	zstdFile(t, img, zst)
	out := filepath.Join(dir, "out.img")
	size, sum, first, err := decompressSparse(context.Background(), zst, out)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(img)
	got, _ := os.ReadFile(out)
	ws := sha256.Sum256(want)
	if !bytes.Equal(got, want) || size != int64(len(want)) || sum != hexSum(ws[:]) {
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
	if _, _, _, err := decompressSparse(context.Background(), zst, out); err == nil {
		t.Fatal("a truncated .zst decompressed without error")
	}
}

func hexSum(b []byte) string {
	const hx = "0123456789abcdef"
	s := make([]byte, 0, 64)
	for _, c := range b {
		s = append(s, hx[c>>4], hx[c&15])
	}
	return string(s)
}

func mbr(parts ...[3]uint32) []byte {
	s := make([]byte, 512)
	for i, p := range parts {
		e := s[446+16*i:]
		e[4] = byte(p[0])
		binary.LittleEndian.PutUint32(e[8:], p[1])
		binary.LittleEndian.PutUint32(e[12:], p[2])
	}
	s[510], s[511] = 0x55, 0xaa
	return s
}

func TestCheckMBR(t *testing.T) {
	good := mbr([3]uint32{0x0b, 16384, 61440}, [3]uint32{0x83, 77824, 100000})
	if err := checkMBR(good); err != nil {
		t.Fatalf("a NixOS-like table was rejected: %v", err)
	}
	for _, fat := range []uint32{0x0c, 0x0e} {
		if err := checkMBR(mbr([3]uint32{fat, 2048, 2048}, [3]uint32{0x83, 4096, 4096})); err != nil {
			t.Errorf("FAT type %#x rejected: %v", fat, err)
		}
	}
	noSig := append([]byte(nil), good...)
	noSig[511] = 0
	gpt := mbr([3]uint32{0xee, 1, 1 << 20})
	cases := map[string]struct {
		sector []byte
		want   string
	}{
		"no signature":     {noSig, "no MBR partition table"},
		"short":            {good[:100], "shorter than one sector"},
		"no FAT":           {mbr([3]uint32{0x83, 2048, 2048}), "no FAT firmware partition"},
		"no Linux":         {mbr([3]uint32{0x0c, 2048, 2048}), "no Linux root partition"},
		"protective GPT":   {gpt, "neither a FAT"},
		"empty partitions": {mbr([3]uint32{0x0c, 2048, 0}, [3]uint32{0x83, 4096, 4096}), "no FAT"},
		"random":           {bytes.Repeat([]byte{0x5a}, 512), "no MBR"},
	}
	for name, tc := range cases {
		err := checkMBR(tc.sector)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
}

func TestCheckImageFileReadsThroughZstd(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "sd.img")
	makeSDImage(t, img, 64, 0)
	if err := checkImageFile(img, false); err != nil {
		t.Fatalf("real image rejected: %v", err)
	}
	zstdFile(t, img, img+".zst")
	if err := checkImageFile(img+".zst", true); err != nil {
		t.Fatalf("compressed real image rejected: %v", err)
	}
	if err := checkImageFile(img+".zst", false); err == nil {
		t.Fatal("a .zst read as a plain image was accepted")
	}
}

func TestProgressReader(t *testing.T) {
	p := newProgressReader()
	var total atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, _ := io.Copy(io.Discard, p)
		total.Store(n)
	}()
	for i := 0; i < 1000; i++ {
		p.Add(100003)
	}
	time.Sleep(10 * time.Millisecond)
	p.Close()
	wg.Wait()
	if total.Load() != 100003*1000 {
		t.Fatalf("the reader returned %d bytes, want %d", total.Load(), 100003*1000)
	}
}

func TestLogTail(t *testing.T) {
	ui := &testUi{}
	tail := newLogTail(ui, "nix: ", 3)
	out, errw := tail.Writer(0), tail.Writer(1)
	io.WriteString(out, "one\ntw")
	io.WriteString(errw, "err-a\n")
	io.WriteString(out, "o\n\nprogress 10%\rprogress 100%\nthr")
	io.WriteString(errw, "err-b\r\n")
	io.WriteString(out, "ee")
	tail.Flush()
	want := []string{"nix: one", "nix: err-a", "nix: two", "nix: progress 100%", "nix: err-b", "nix: three"}
	if strings.Join(ui.messages, "|") != strings.Join(want, "|") {
		t.Fatalf("messages %q, want %q", ui.messages, want)
	}
	if got := tail.Tail(); strings.Join(got, "|") != "progress 100%|err-b|three" {
		t.Fatalf("tail %q", got)
	}
	pe := &PhaseError{Phase: PhaseBuild, Err: io.ErrUnexpectedEOF, Log: tail.Tail()}
	if msg := pe.Error(); !strings.HasPrefix(msg, "nixos-sd build failed: unexpected EOF") || !strings.Contains(msg, "\n    three") {
		t.Fatalf("PhaseError: %q", msg)
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

func TestProgressReaderBatchesReads(t *testing.T) {
	p := newProgressReader()
	p.interval = 50 * time.Millisecond
	var reads, total atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<20)
		for {
			n, err := p.Read(buf)
			total.Add(int64(n))
			if err != nil {
				return
			}
			reads.Add(1)
		}
	}()
	start := time.Now()
	var added int64
	for time.Since(start) < 500*time.Millisecond {
		p.Add(1000)
		added += 1000
		time.Sleep(100 * time.Microsecond)
	}
	p.Close()
	<-done
	// About 10 reads in 500 ms at one per 50 ms, not one per Add.
	if r := reads.Load(); r > 20 || r < 2 {
		t.Fatalf("%d reads in 500 ms with a 50 ms interval", r)
	}
	if total.Load() != added {
		t.Fatalf("reported %d bytes of %d", total.Load(), added)
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
	d := &downloader{comm: comm, channels: 1, chunkSize: 512 << 10}
	dst, _ := os.Create(filepath.Join(dir, "local"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := d.download(ctx, src, 1<<20, dst)
	if err == nil || !strings.Contains(err.Error(), "more than the 524288 bytes asked for") {
		t.Fatalf("want the overlong range reported, got %v", err)
	}
}
