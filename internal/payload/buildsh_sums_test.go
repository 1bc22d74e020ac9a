package payload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sumsEnv is a scriptEnv whose nix builds rd/store/sd-image/name from the
// bytes of src, with the tools build.sh's sums need.
func sumsEnv(t *testing.T, rd, name, src string, withZstd bool) *scriptEnv {
	t.Helper()
	e := newScriptEnv(t)
	e.link("find", "stat", "sha256sum", "wc", "mv", "cp")
	if withZstd {
		e.link("zstd")
	}
	e.fake("nix", `while [ "$1" != --out-link ]; do shift; done
mkdir -p "`+rd+`/store/sd-image" && cp "`+src+`" "`+rd+`/store/sd-image/`+name+`" && ln -sfn "`+rd+`/store" "$2"`)
	return e
}

func fileSHA256(t *testing.T, b []byte) string {
	t.Helper()
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// After a build, build.sh keeps the image's sums, and `sums` prints them
// without reading the image again, until the image changes.
func TestBuildScriptKeepsTheImageSums(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "x.img")
	makeSDImage(t, img, 8, 2)
	raw, _ := os.ReadFile(img)
	zst := img + ".zst"
	if out, err := exec.Command("zstd", "-q", "-o", zst, img).CombinedOutput(); err != nil {
		t.Fatalf("zstd: %v\n%s", err, out)
	}
	comp, _ := os.ReadFile(zst)
	rd := t.TempDir()
	e := sumsEnv(t, rd, "x.img.zst", zst, true)
	out, code := e.run(context.Background(), "build", rd, "60", "--sums=image", "nix", "build", "x", "--out-link", filepath.Join(rd, "result"))
	if code != 0 || !strings.Contains(out, "computed the image's SHA-256") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	built := filepath.Join(rd, "store", "sd-image", "x.img.zst")
	out, code = e.run(context.Background(), "locate", rd)
	if code != 0 || out != built+"\n" {
		t.Fatalf("locate: exit %d: %q, want %q", code, out, built+"\n")
	}
	want := fileSHA256(t, comp) + "  " + built + "\nimage " + fileSHA256(t, raw) + "  -\n"
	out, code = e.run(context.Background(), "sums", rd, built, "image")
	if code != 0 || out != want {
		t.Fatalf("sums: exit %d:\n%s\nwant\n%s", code, out, want)
	}

	// What `sums` prints comes from image.sums while the image is the same.
	cache := filepath.Join(rd, "image.sums")
	b, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := strings.Cut(string(b), "\n")
	kept := key + "\n" + strings.Repeat("1", 64) + "  " + built + "\nimage " + strings.Repeat("2", 64) + "  -\n"
	os.WriteFile(cache, []byte(kept), 0o644)
	if out, _ := e.run(context.Background(), "sums", rd, built, "image"); !strings.HasPrefix(out, strings.Repeat("1", 64)) {
		t.Fatalf("sums did not use image.sums:\n%s", out)
	}
	// A changed image is hashed again.
	later := time.Now().Add(time.Hour)
	os.Chtimes(built, later, later)
	if out, _ := e.run(context.Background(), "sums", rd, built, "image"); out != want {
		t.Fatalf("sums of a changed image:\n%s\nwant\n%s", out, want)
	}
}

// Without zstd on the host, or for an image that is not compressed, only
// the file's SHA-256 is kept; `sums ... image` then fails as zstd would.
func TestBuildScriptKeepsOnlyTheFileSumWithoutZstd(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "x.img")
	makeSDImage(t, img, 8, 2)
	raw, _ := os.ReadFile(img)
	for _, tc := range []struct {
		name     string
		withZstd bool
	}{{"x.img.zst", false}, {"x.img", true}} {
		rd := t.TempDir()
		e := sumsEnv(t, rd, tc.name, img, tc.withZstd)
		out, code := e.run(context.Background(), "build", rd, "60", "--sums=image", "nix", "build", "x", "--out-link", filepath.Join(rd, "result"))
		if code != 0 {
			t.Fatalf("%s: exit %d:\n%s", tc.name, code, out)
		}
		built := filepath.Join(rd, "store", "sd-image", tc.name)
		b, _ := os.ReadFile(filepath.Join(rd, "image.sums"))
		if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 2 || lines[1] != fileSHA256(t, raw)+"  "+built {
			t.Fatalf("%s: image.sums = %q", tc.name, b)
		}
		if out, code := e.run(context.Background(), "sums", rd, built); code != 0 || out != fileSHA256(t, raw)+"  "+built+"\n" {
			t.Fatalf("%s: sums: exit %d: %q", tc.name, code, out)
		}
	}
}

// Without --sums, or when the build made no single image, nothing is kept.
func TestBuildScriptKeepsNoSumsWithoutOneImage(t *testing.T) {
	rd := t.TempDir()
	e := newScriptEnv(t)
	e.fake("nix", `while [ "$1" != --out-link ]; do shift; done
mkdir -p "`+rd+`/store/sd-image" && ln -sfn "`+rd+`/store" "$2"`)
	out, code := e.run(context.Background(), "build", rd, "60", "--sums=image", "nix", "build", "x", "--out-link", filepath.Join(rd, "result"))
	if code != 0 || strings.Contains(out, "SHA-256") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(rd, "image.sums")); !os.IsNotExist(err) {
		t.Fatalf("image.sums written for no image: %v", err)
	}
}

func TestBuildScriptPrintsTheNixVersion(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("nix", `echo "nix (Nix) 2.26.3"`)
	if out, code := e.run(context.Background(), "nix-version"); code != 0 || out != "nix (Nix) 2.26.3\n" {
		t.Fatalf("exit %d: %q", code, out)
	}
	e = newScriptEnv(t)
	if out, code := e.run(context.Background(), "nix-version"); code != 3 || !strings.Contains(out, "Nix is not installed") {
		t.Fatalf("without nix: exit %d: %q", code, out)
	}
}
