package payload

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// localZstd is the path of this machine's zstd program when it can decode
// the image, "" otherwise (no zstd, or one too old for --long). Tests
// replace it.
var localZstd = func() string {
	p, err := exec.LookPath("zstd")
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, "-V").Output()
	if err != nil || !zstdDecodes(string(out)) {
		return ""
	}
	return p
}

var zstdVersionPattern = regexp.MustCompile(`v([0-9]+\.[0-9]+\.[0-9]+)`)

// zstdDecodes reports whether `zstd -V` printed a version that has --long
// (zstd 1.3.2 and newer); the Go decoder serves older ones.
func zstdDecodes(version string) bool {
	m := zstdVersionPattern.FindStringSubmatch(version)
	return m != nil && !VersionLess(m[1], "1.3.2")
}

// decodeImage decodes the zstd stream r into the sparse file dst, as
// decodeSparse does. Without withSum it runs this machine's zstd program
// when there is one: it takes less CPU and wall time than the Go decoder
// here (docs/performance.md). zstd checks the frame checksum and leaves zero
// blocks as holes too (--sparse).
func decodeImage(ctx context.Context, r io.Reader, dst string, withSum bool) (size int64, sum string, first []byte, err error) {
	if zstd := localZstd(); zstd != "" && !withSum {
		size, first, err = decodeWithZstd(ctx, zstd, r, dst)
		return size, "", first, err
	}
	return decodeSparse(r, dst, withSum)
}

// decodeWithZstd has zstd decode r into dst (--long=31 allows any window a
// NixOS image may use) and returns the image's size and first sector. dst is
// zstd's standard output: with -o, zstd buffers up to 1 MB of the image, so
// its start may not reach the file while the download waits for a range.
func decodeWithZstd(ctx context.Context, zstd string, r io.Reader, dst string) (int64, []byte, error) {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, nil, err
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, zstd, "-d", "-c", "-q", "--long=31", "--sparse")
	cmd.Stdout = out
	stderr := &remotecmd.LimitedBuffer{B: &bytes.Buffer{}, Max: 4 << 10}
	cmd.Stderr = stderr
	pr, in, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	defer in.Close()
	growPipe(in)
	cmd.Stdin = pr
	err = cmd.Start()
	pr.Close()
	if err != nil {
		return 0, nil, fmt.Errorf("starting %s: %w", zstd, err)
	}
	src := &readErr{r: r}
	// A write fails only when zstd ended early; its status says why.
	_, _ = io.CopyBuffer(onlyWriter{in}, src, make([]byte, 1<<20))
	in.Close()
	werr := cmd.Wait()
	switch {
	case src.err != nil && src.err != io.EOF:
		// The download failed, or ctx ended.
		return 0, nil, src.err
	case ctx.Err() != nil:
		return 0, nil, ctx.Err()
	case werr != nil:
		msg := strings.TrimSpace(stderr.B.String())
		if msg == "" {
			msg = werr.Error()
		}
		return 0, nil, fmt.Errorf("zstd could not decompress the image: %s", msg)
	}
	f, err := os.Open(dst)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, nil, err
	}
	first := make([]byte, min(st.Size(), 512))
	if _, err := io.ReadFull(f, first); err != nil {
		return 0, nil, err
	}
	return st.Size(), first, nil
}

// readErr keeps the error its reader returned; it hides the reader's
// WriteTo, so that io.CopyBuffer reads in its buffer's size.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

// onlyWriter hides a ReadFrom, so that io.CopyBuffer writes to the pipe in
// its buffer's size.
type onlyWriter struct{ io.Writer }
