package payload

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestPrepareRejectsCompressedNameForDecompressedImage(t *testing.T) {
	c := &Config{OutputDirectory: filepath.Join(t.TempDir(), "out"), ImageName: "pi.img.zst"}
	errs := c.Prepare("x", false)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `name it "pi.img"`) {
		t.Fatalf("errors %v", errs)
	}
	f := false
	c = &Config{OutputDirectory: filepath.Join(t.TempDir(), "out"), ImageName: "pi.img.zst", Decompress: &f}
	if errs := c.Prepare("x", false); len(errs) != 0 {
		t.Fatalf("a .zst name with decompress = false was rejected: %v", errs)
	}
}
