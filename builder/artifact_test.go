package builder

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"
	"github.com/mitchellh/mapstructure"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
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

// TestArtifactHCPPackerState reads the artifact back as Packer's HCP Packer
// registry does (mapstructure into []registryimage.Image).
func TestArtifactHCPPackerState(t *testing.T) {
	a := &Artifact{
		ImagePath: "/out/output-pi/nixos-image-sd-card-26.05-aarch64-linux.img",
		SHA256:    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Generated: map[string]interface{}{
			"InstanceType":    "c7g.2xlarge",
			"NixpkgsRevision": "0123456789abcdef0123456789abcdef01234567",
			"Timings":         "ignored: not a label",
		},
		Region:        "us-east-2",
		SourceAMI:     "ami-0123456789abcdef0",
		Configuration: "github:me/nixos-pi#rpi4",
	}
	var images []registryimage.Image
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{Result: &images, WeaklyTypedInput: true})
	if err != nil {
		t.Fatal(err)
	}
	state := a.State(registryimage.ArtifactStateURI)
	if state == nil {
		t.Fatal("State(ArtifactStateURI) = nil: HCP Packer would record nothing")
	}
	if err := dec.Decode(state); err != nil {
		t.Fatalf("decoding as Packer does: %v", err)
	}
	if len(images) != 1 {
		t.Fatalf("images = %+v, want one", images)
	}
	img := images[0]
	if err := img.Validate(); err != nil {
		t.Fatal(err)
	}
	want := registryimage.Image{
		ImageID:        a.SHA256,
		ProviderName:   "nixos-sd",
		ProviderRegion: "us-east-2",
		SourceImageID:  "ami-0123456789abcdef0",
		Labels: map[string]string{
			"nixpkgs_revision": "0123456789abcdef0123456789abcdef01234567",
			"configuration":    "github:me/nixos-pi#rpi4",
			"instance_type":    "c7g.2xlarge",
			"image_file":       "nixos-image-sd-card-26.05-aarch64-linux.img",
		},
	}
	if !reflect.DeepEqual(img, want) {
		t.Errorf("HCP image = %+v\nwant        %+v", img, want)
	}
	if got := img.String(); got != "provider:nixos-sd, image:"+a.SHA256+", region:us-east-2" {
		t.Errorf("String = %q", got)
	}
}

func TestArtifactHCPPackerStateWithoutChecksum(t *testing.T) {
	if s := (&Artifact{ImagePath: "x.img"}).State(registryimage.ArtifactStateURI); s != nil {
		t.Errorf("an artifact without a SHA-256 gave HCP Packer %v; want nil (Packer then skips it)", s)
	}
}

func TestConfigurationLabel(t *testing.T) {
	for _, tc := range []struct {
		cfg  payload.Config
		want string
	}{
		{payload.Config{}, "built-in"},
		{payload.Config{NixOSConfig: "/home/me/pi/configuration.nix"}, "configuration.nix"},
		{payload.Config{NixOSConfig: "./pi-config"}, "pi-config"},
		{payload.Config{Flake: "./pi-flake#rpi4"}, "./pi-flake#rpi4"},
	} {
		if got := configurationLabel(&tc.cfg); got != tc.want {
			t.Errorf("configurationLabel(%+v) = %q, want %q", tc.cfg, got, tc.want)
		}
	}
}
