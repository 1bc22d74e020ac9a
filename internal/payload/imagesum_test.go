package payload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// hostImageSum is what the fake sha256sum below prints for its input: the
// image's SHA-256 as the host computes it while decompressing its copy.
var hostImageSum = strings.Repeat("ab", 32)

// fakeImageSum makes the host's sha256sum print hostImageSum for what it
// reads on its input (zstd's output), and hash files as usual.
func fakeImageSum(e *runEnv) {
	script := "#!/bin/bash\nif [ $# -eq 0 ]; then cat >/dev/null; echo '" + hostImageSum + "  -'; exit 0; fi\nexec /usr/bin/sha256sum \"$@\"\n"
	if err := os.WriteFile(filepath.Join(e.dir, "bin", "sha256sum"), []byte(script), 0o755); err != nil {
		e.t.Fatal(err)
	}
}

// By default the image's SHA-256 is the host's: this machine checks the
// compressed bytes and leaves the image to zstd's frame checksum.
func TestRunTakesTheImageSumFromTheHost(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	fakeImageSum(e)
	res, err := e.run(context.Background(), e.config(nil))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	if res.SHA256 != hostImageSum {
		t.Fatalf("the result's SHA-256 is %s, want the host's %s", res.SHA256, hostImageSum)
	}
	b, _ := os.ReadFile(res.ImagePath + ".sha256")
	if !strings.HasPrefix(string(b), hostImageSum+"  ") {
		t.Fatalf(".sha256 = %q, want the host's SHA-256", b)
	}
	if !slices.ContainsFunc(e.comm.Commands(), func(c string) bool { return strings.Contains(c, " sums ") && strings.HasSuffix(c, " image") }) {
		t.Fatalf("the host did not hash the decompressed image:\n%s", strings.Join(e.comm.Commands(), "\n"))
	}
}

// hash_image_locally hashes the image here too, and a difference with the
// host's fails the build.
func TestRunHashImageLocallyComparesWithTheHost(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	fakeImageSum(e)
	_, err := e.run(context.Background(), e.config(func(c *Config) { c.HashImageLocally = true }))
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseVerify || !strings.Contains(err.Error(), "host's decompressed copy has "+hostImageSum) {
		t.Fatalf("want a verify error naming the host's image SHA-256, got %v", err)
	}
	e.outputHolds()
}

// With hash_image_locally and a host that agrees, the image's SHA-256 is
// the one computed here.
func TestRunHashImageLocallyAgreesWithTheHost(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	res, err := e.run(context.Background(), e.config(func(c *Config) { c.HashImageLocally = true }))
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	if want := sha256Of(t, e.image); res.SHA256 != want || sha256Of(t, res.ImagePath) != want {
		t.Fatalf("result SHA-256 %s, image %s, want %s", res.SHA256, sha256Of(t, res.ImagePath), want)
	}
}

// The decoder checks zstd's frame checksum: a stream whose data decodes but
// whose checksum differs fails.
func TestDecodeSparseChecksTheFrameChecksum(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "x.img")
	makeSDImage(t, img, 8, 2)
	zst := img + ".zst"
	zstdFile(t, img, zst)
	b, err := os.ReadFile(zst)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0xff // the frame's content checksum is its last 4 bytes
	if err := os.WriteFile(zst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = decodeFile(t, zst, filepath.Join(dir, "out.img"))
	if err == nil || !strings.Contains(err.Error(), "CRC") {
		t.Fatalf("a stream with a wrong frame checksum decoded: %v", err)
	}
}

// DecodeLocal, the benchmark's decode limit, yields the sums of both files.
func TestDecodeLocal(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "x.img")
	makeSDImage(t, img, 8, 3)
	zst := img + ".zst"
	zstdFile(t, img, zst)
	out := filepath.Join(dir, "out.img")
	zsum, isum, err := DecodeLocal(zst, out, true)
	if err != nil {
		t.Fatal(err)
	}
	if zsum != sha256Of(t, zst) || isum != sha256Of(t, img) || sha256Of(t, out) != isum {
		t.Fatalf("sums %s %s, want %s %s", zsum, isum, sha256Of(t, zst), sha256Of(t, img))
	}
	if _, isum, _ = DecodeLocal(zst, out, false); isum != "" {
		t.Fatalf("the image was hashed without hashImage: %s", isum)
	}
}
