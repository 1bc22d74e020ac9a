package payload

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunDecompressesDuringDownload holds the .img.zst's last range back
// until the image's first sector, which the decoder writes from the first
// ranges, is in the local .img.partial.
func TestRunDecompressesDuringDownload(t *testing.T) {
	e := newRunEnv(t)
	remoteImage := e.publish(true)
	st, err := os.Stat(remoteImage)
	if err != nil {
		t.Fatal(err)
	}
	offs := rangeOffsets(st.Size(), 4)
	last := offs[len(offs)-1]
	if last == 0 {
		t.Fatalf("the test image (%d bytes) fits in one range", st.Size())
	}
	partial := filepath.Join(e.out, testImageName+".partial")
	var decodedEarly atomic.Bool
	e.comm.Before = func(cmd string) {
		if !strings.HasPrefix(cmd, "dd ") || !strings.Contains(cmd, " skip="+strconv.FormatInt(last, 10)+" ") {
			return
		}
		sector := make([]byte, 512)
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			f, err := os.Open(partial)
			if err != nil {
				continue
			}
			n, _ := io.ReadFull(f, sector)
			f.Close()
			if n == 512 && checkMBR(sector) == nil {
				decodedEarly.Store(true)
				return
			}
		}
	}
	res, err := e.run(context.Background(), e.config(nil))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	if !decodedEarly.Load() {
		t.Fatal("the decoder wrote nothing of the image while the last range was held back: decompression waits for the whole download")
	}
	if got, want := sha256Of(t, res.ImagePath), sha256Of(t, e.image); got != want || res.SHA256 != want {
		t.Fatalf("image sha256 %s, result %s, original %s", got, res.SHA256, want)
	}
	e.outputHolds(testImageName, testImageName+".json", testImageName+".sha256")
}

func TestRunCompressesUncompressedImageInTransit(t *testing.T) {
	e := newRunEnv(t)
	e.publish(false)
	c := e.config(nil)
	res, err := e.run(context.Background(), c)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	var compressed int
	for _, cmd := range e.comm.Commands() {
		if strings.HasPrefix(cmd, "dd ") && strings.HasSuffix(cmd, "| zstd -1 -q -c") {
			compressed++
		}
	}
	if compressed == 0 {
		t.Fatalf("no range was compressed in transit: %q", e.comm.Commands())
	}
	final := filepath.Join(e.out, testImageName)
	if res.ImagePath != final || sha256Of(t, final) != sha256Of(t, e.image) || res.Compressed {
		t.Fatalf("result %+v", res)
	}
	st, _ := os.Stat(final)
	if a := allocated(t, final); a > st.Size()/3 {
		t.Fatalf("the downloaded image is not sparse: %d of %d bytes allocated", a, st.Size())
	}
	if got := e.ui.tracked.Load(); got != 64<<20 {
		t.Fatalf("progress reported %d bytes, want %d", got, 64<<20)
	}
	e.outputHolds(testImageName, testImageName+".json", testImageName+".sha256")
}

// fakeTool puts an executable script name on the run environment's PATH.
func (e *runEnv) fakeTool(name, script string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, "bin", name), []byte("#!/bin/bash\n"+script), 0o755); err != nil {
		e.t.Fatal(err)
	}
}

// TestRunChecksumFailureStopsTheDownload: the host's checksum fails at once
// while the ranges come slowly over one channel; the failure cancels the
// download instead of waiting for every range.
func TestRunChecksumFailureStopsTheDownload(t *testing.T) {
	e := newRunEnv(t)
	remoteImage := e.publish(false)
	e.fakeTool("sha256sum", "echo 'sha256sum: read error' >&2; exit 1\n")
	st, err := os.Stat(remoteImage)
	if err != nil {
		t.Fatal(err)
	}
	ranges := int64(len(rangeOffsets(st.Size(), 1)))
	if ranges < 3 {
		t.Fatalf("the test image (%d bytes) has only %d ranges", st.Size(), ranges)
	}
	var started atomic.Int64
	e.comm.Before = func(cmd string) {
		if strings.HasPrefix(cmd, "dd ") {
			started.Add(1)
			time.Sleep(300 * time.Millisecond)
		}
	}
	_, err = e.run(context.Background(), e.config(func(c *Config) { c.DownloadChannels = 1 }))
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseChecksum || !strings.Contains(err.Error(), "sha256sum: read error") {
		t.Fatalf("want the checksum's error, got %v", err)
	}
	if n := started.Load(); n >= ranges {
		t.Fatalf("all %d ranges were fetched after the checksum failed", n)
	}
	e.outputHolds()
}

// TestRunDownloadFailureIsADownloadError: the local SHA-256 that follows the
// download ends with it, and the error names the download, not the
// verification.
func TestRunDownloadFailureIsADownloadError(t *testing.T) {
	for i := 0; i < 5; i++ {
		e := newRunEnv(t)
		e.publish(false)
		e.fakeTool("dd", "echo 'dd: disk gone' >&2; exit 1\n")
		_, err := e.run(context.Background(), e.config(nil))
		var pe *PhaseError
		if !errors.As(err, &pe) || pe.Phase != PhaseDownload || !strings.Contains(err.Error(), "dd: disk gone") {
			t.Fatalf("run %d: want the download's error, got %v", i, err)
		}
		e.outputHolds()
	}
}

// rangeOffsets are where the ranges of a file of size bytes start when
// channels download it and none fails.
func rangeOffsets(size int64, channels int) []int64 {
	c := &rangeCarver{size: size, longest: chooseChunk(size, channels, false), channels: channels}
	var offs []int64
	for {
		off, _, ok := c.take(channels)
		if !ok {
			return offs
		}
		offs = append(offs, off)
	}
}
