package payload

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestRunForceEmptiesOutputDirectory(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	os.MkdirAll(e.out, 0o755)
	os.WriteFile(filepath.Join(e.out, "stale.img"), []byte("old"), 0o644)
	c := e.configForce(true, nil)
	if _, err := e.run(context.Background(), c); err != nil {
		t.Fatalf("Run: %v", err)
	}
	e.outputHolds(testImageName, testImageName+".json", testImageName+".sha256")
}

func TestLocalNames(t *testing.T) {
	const built = "/nix/store/x-sd/sd-image/nixos-sd.img"
	yes, no := true, false
	for _, tc := range []struct {
		image, imageName string
		decompress       *bool
		want             localNames
	}{
		{built + ".zst", "", &yes, localNames{base: "nixos-sd.img.zst", zst: true, decompress: true,
			download: "out/nixos-sd.img.zst.partial", final: "nixos-sd.img", finalTmp: "out/nixos-sd.img.partial"}},
		{built + ".zst", "", &no, localNames{base: "nixos-sd.img.zst", zst: true,
			download: "out/nixos-sd.img.zst.partial", final: "nixos-sd.img.zst", finalTmp: "out/nixos-sd.img.zst.partial"}},
		{built, "pi.img", &yes, localNames{base: "nixos-sd.img",
			download: "out/nixos-sd.img.partial", final: "pi.img", finalTmp: "out/nixos-sd.img.partial"}},
		// image_name is the .zst's own name: the decompressed file keeps apart.
		{built + ".zst", "nixos-sd.img.zst", &yes, localNames{base: "nixos-sd.img.zst", zst: true, decompress: true,
			download: "out/nixos-sd.img.zst.partial", final: "nixos-sd.img.zst", finalTmp: "out/nixos-sd.img.zst.decompressed.partial"}},
	} {
		r := &run{cfg: &Config{OutputDirectory: "out", ImageName: tc.imageName, Decompress: tc.decompress}}
		if got := r.localNames(tc.image); got != tc.want {
			t.Errorf("localNames(%q, image_name %q, decompress %v) =\n%+v, want\n%+v", tc.image, tc.imageName, *tc.decompress, got, tc.want)
		}
	}
}
