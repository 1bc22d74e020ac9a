package payload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// zstdImage makes a small SD image and its .zst, and returns both paths;
// it fails the test when this machine has no zstd program to decode with.
func zstdImage(t *testing.T) (img, zst string) {
	t.Helper()
	if localZstd() == "" {
		t.Fatal("no zstd program on PATH: decodeImage's tests need Debian's zstd")
	}
	dir := t.TempDir()
	img = filepath.Join(dir, "sd.img")
	makeSDImage(t, img, 64, 3)
	zst = img + ".zst"
	zstdFile(t, img, zst)
	return img, zst
}

// decodeImageFile runs decodeImage on the file src.
func decodeImageFile(t *testing.T, src, dst string, withSum bool) (int64, string, []byte, error) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	return decodeImage(t.Context(), in, dst, withSum)
}

// With the zstd program the image is the same and sparse; the Go decoder
// hashes it when asked to.
func TestDecodeImageWithZstd(t *testing.T) {
	img, zst := zstdImage(t)
	out := filepath.Join(t.TempDir(), "out.img")
	want, _ := os.ReadFile(img)
	ws := sha256.Sum256(want)
	for _, withSum := range []bool{false, true} {
		size, sum, first, err := decodeImageFile(t, zst, out, withSum)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, want) || size != int64(len(want)) || !bytes.Equal(first, want[:512]) {
			t.Fatalf("withSum %v: the decoded image differs (size %d)", withSum, size)
		}
		if wantSum := hex.EncodeToString(ws[:]); withSum && sum != wantSum || !withSum && sum != "" {
			t.Fatalf("withSum %v: sum %q", withSum, sum)
		}
		if a := allocated(t, out); a > size/4 {
			t.Fatalf("not sparse: %d of %d bytes allocated", a, size)
		}
	}
}

// zstd checks the frame checksum and notices a truncated stream.
func TestDecodeImageWithZstdFailsOnBadStreams(t *testing.T) {
	_, zst := zstdImage(t)
	b, err := os.ReadFile(zst)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bad := append([]byte(nil), b...)
	bad[len(bad)-1] ^= 0xff // the frame's content checksum is its last 4 bytes
	for name, data := range map[string][]byte{"checksum": bad, "truncated": b[:len(b)/2]} {
		f := filepath.Join(dir, name+".zst")
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := decodeImageFile(t, f, filepath.Join(dir, "out.img"), false)
		if err == nil || !strings.Contains(err.Error(), "zstd could not decompress the image") {
			t.Fatalf("%s: want zstd's failure, got %v", name, err)
		}
	}
}

// When the download fails, its error is the decoding's, not zstd's
// complaint about a short stream; so is a canceled context's.
func TestDecodeImageWithZstdReportsTheReadersError(t *testing.T) {
	_, zst := zstdImage(t)
	b, _ := os.ReadFile(zst)
	failed := errors.New("the download failed")
	r := io.MultiReader(bytes.NewReader(b[:len(b)/2]), errReader{failed})
	out := filepath.Join(t.TempDir(), "out.img")
	if _, _, _, err := decodeImage(t.Context(), r, out, false); !errors.Is(err, failed) {
		t.Fatalf("want the reader's error, got %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, _, err := decodeImage(ctx, bytes.NewReader(b), out, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("want the context's error, got %v", err)
	}
}

// Without the zstd program the Go decoder does the work.
func TestDecodeImageWithoutZstd(t *testing.T) {
	img, zst := zstdImage(t)
	old := localZstd
	localZstd = func() string { return "" }
	t.Cleanup(func() { localZstd = old })
	out := filepath.Join(t.TempDir(), "out.img")
	size, _, _, err := decodeImageFile(t, zst, out, false)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(img)
	if want, got := sha256Of(t, img), sha256Of(t, out); got != want || st == nil || size != st.Size() {
		t.Fatalf("the Go decoder's image differs")
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// A zstd without --long (older than 1.3.2) is left to the Go decoder: it
// would refuse the image's arguments.
func TestZstdDecodesFromVersion(t *testing.T) {
	for v, want := range map[string]bool{
		"*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***":              true,
		"*** zstd command line interface 64-bits v1.3.3, by Yann Collet ***": true,
		"*** zstd command line interface 64-bits v1.3.2, by Yann Collet ***": true,
		"*** zstd command line interface 64-bits v1.3.1, by Yann Collet ***": false,
		"*** zstd command line interface 64-bits v0.8.1, by Yann Collet ***": false,
		"zstd: unknown version": false,
	} {
		if got := zstdDecodes(v); got != want {
			t.Errorf("zstdDecodes(%q) = %v, want %v", v, got, want)
		}
	}
	// The zstd program here (Debian's) is new enough.
	if localZstd() == "" {
		t.Fatal("localZstd found no usable zstd program on PATH")
	}
}
