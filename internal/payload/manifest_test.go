package payload

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestManifest(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "configuration.nix")
	if err := os.WriteFile(conf, []byte("{ }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		zst  bool
		want map[string]any
	}{
		{"built-in", func(c *Config) { c.Hostname = "kitchen-pi" }, true,
			map[string]any{"config_source": "built-in", "nixpkgs": DefaultNixpkgs, "hostname": "kitchen-pi", "compressed_sha256": "remote-sum"}},
		{"flake", func(c *Config) { c.Flake = "github:me/nixos-pi#rpi4" }, false,
			map[string]any{"config_source": "flake", "flake": "github:me/nixos-pi#rpi4", "nixpkgs": "pinned by the flake", "compressed_sha256": nil, "hostname": nil}},
		{"nixos_config", func(c *Config) { c.NixOSConfig = conf; c.Nixpkgs = "nixos-25.11" }, true,
			map[string]any{"config_source": "nixos_config", "nixos_config": conf, "nixpkgs": "nixos-25.11", "hostname": nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &run{cfg: prepared(t, tc.edit), opts: RunOptions{ManifestExtra: map[string]string{
				"instance_type": "c7g.2xlarge", "sha256": "must not win", "image": "must not win"}}}
			res := &Result{SHA256: "local-sum", Size: 64 << 20, RemoteImage: "/nix/store/x-sd/sd-image/x.img.zst",
				Timings: map[string]time.Duration{PhaseBuild: 1500 * time.Millisecond}}
			b, err := r.manifest(res, "x.img", "remote-sum", tc.zst)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("manifest: %v\n%s", err, b)
			}
			want := map[string]any{"image": "x.img", "sha256": "local-sum", "size": float64(64 << 20), "compressed": false,
				"remote_image": res.RemoteImage, "instance_type": "c7g.2xlarge"}
			for k, v := range tc.want {
				want[k] = v
			}
			for k, v := range want {
				if m[k] != v {
					t.Errorf("manifest %s = %v, want %v", k, m[k], v)
				}
			}
			if tm, ok := m["timings_seconds"].(map[string]any); !ok || tm[PhaseBuild] != 1.5 {
				t.Errorf("timings_seconds = %v, want build 1.5", m["timings_seconds"])
			}
			if s, _ := m["created"].(string); s == "" {
				t.Errorf("created = %v", m["created"])
			} else if _, err := time.Parse(time.RFC3339, s); err != nil {
				t.Errorf("created: %v", err)
			}
		})
	}
}
