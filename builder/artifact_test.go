package builder

import (
	"os"
	"path/filepath"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

func TestArtifact(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "nixos.img")
	files := []string{img, img + ".sha256", img + ".json"}
	for _, f := range files {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gd := map[string]interface{}{"InstanceType": "c7g.2xlarge", "ImagePath": img}
	var a packersdk.Artifact = &Artifact{ImagePath: img, SHA256: "ab12", Paths: files, Generated: gd}
	if a.BuilderId() != "nixos-sd.builder" {
		t.Errorf("BuilderId = %q; it must never change", a.BuilderId())
	}
	if a.Id() != img || len(a.Files()) != 3 {
		t.Errorf("Id = %q, Files = %v", a.Id(), a.Files())
	}
	if want := "NixOS SD image: " + img + " (sha256 ab12)"; a.String() != want {
		t.Errorf("String = %q, want %q", a.String(), want)
	}
	if got, _ := a.State("generated_data").(map[string]interface{}); got["InstanceType"] != "c7g.2xlarge" {
		t.Errorf("generated_data = %v", a.State("generated_data"))
	}
	if a.State("other") != nil {
		t.Error("unknown state answered")
	}
	if err := a.Destroy(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s not removed", f)
		}
	}
	if err := a.Destroy(); err != nil {
		t.Errorf("destroying twice: %v", err)
	}
}
