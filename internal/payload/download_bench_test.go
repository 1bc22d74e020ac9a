package payload

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks of the parallel download over the local bash communicator. Each
// prints its figures as ratios against a baseline measured in the same run
// (over loopback the ratios are near 1: there is no latency or per-stream
// bandwidth limit to overcome; the e2e benchmark adds link emulation).

// countingComm counts the bytes that cross the "wire" (the commands' stdout).
func countingComm(wire *atomic.Int64) *localComm {
	return &localComm{Stdout: func(_ string, w io.Writer) io.Writer {
		return writerFunc(func(p []byte) (int, error) {
			wire.Add(int64(len(p)))
			return w.Write(p)
		})
	}}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func timeDownload(b *testing.B, src string, size int64, channels int, compress bool) (time.Duration, int64) {
	b.Helper()
	var wire atomic.Int64
	d := &downloader{comm: countingComm(&wire), channels: channels, compress: compress}
	dst, err := os.Create(filepath.Join(b.TempDir(), "dst"))
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	start := time.Now()
	if err := d.download(context.Background(), src, size, dst); err != nil {
		b.Fatal(err)
	}
	return time.Since(start), wire.Load()
}

func BenchmarkDownloadChannels(b *testing.B) {
	src := filepath.Join(b.TempDir(), "image.img.zst")
	const size = 128 << 20
	randomFile(b, src, size, 42) // a compressed image does not compress further
	configs := []int{1, 2, 4}
	total := make(map[int]time.Duration)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, ch := range configs {
			d, _ := timeDownload(b, src, size, ch, false)
			total[ch] += d
		}
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mbps(total[1]), "MiB/s-1ch")
	b.ReportMetric(mbps(total[4]), "MiB/s-4ch")
	b.ReportMetric(total[1].Seconds()/total[2].Seconds(), "speedup-2ch/1ch")
	b.ReportMetric(total[1].Seconds()/total[4].Seconds(), "speedup-4ch/1ch")
}

func BenchmarkDownloadCompression(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "image.img")
	// An uncompressed SD image: file systems, 40 MiB of half random, half
	// text-like data, the rest zeros.
	makeSDImage(b, src, 128, 40)
	st, _ := os.Stat(src)
	size := st.Size()
	var raw, zst time.Duration
	var rawWire, zstWire int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, w := timeDownload(b, src, size, 4, false)
		raw, rawWire = raw+d, rawWire+w
		d, w = timeDownload(b, src, size, 4, true)
		zst, zstWire = zst+d, zstWire+w
	}
	b.StopTimer()
	b.ReportMetric(float64(size)*float64(b.N)/raw.Seconds()/(1<<20), "MiB/s-raw")
	b.ReportMetric(float64(size)*float64(b.N)/zst.Seconds()/(1<<20), "MiB/s-zstd")
	b.ReportMetric(raw.Seconds()/zst.Seconds(), "speedup-zstd/raw")
	b.ReportMetric(float64(rawWire)/float64(zstWire), "wire-bytes-raw/zstd")
}
