package payload

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/version"
)

// writeSidecars writes the image's .sha256 and its .json manifest next to it
// and returns every file of the image.
func (r *run) writeSidecars(res *Result, n localNames, remoteSum string) ([]string, error) {
	sumFile := res.ImagePath + ".sha256"
	if err := writeFileAtomic(sumFile, []byte(res.SHA256+"  "+n.final+"\n")); err != nil {
		return nil, fmt.Errorf("nixos-sd: writing %s: %w", sumFile, err)
	}
	r.partials = append(r.partials, sumFile)
	manifest, err := r.manifest(res, n.final, remoteSum, n.zst)
	if err != nil {
		return nil, err
	}
	jsonFile := res.ImagePath + ".json"
	if err := writeFileAtomic(jsonFile, manifest); err != nil {
		return nil, fmt.Errorf("nixos-sd: writing %s: %w", jsonFile, err)
	}
	files := []string{res.ImagePath, sumFile, jsonFile}
	if lock := res.Nixpkgs.FlakeLockFile; lock != nil {
		lockFile := res.ImagePath + ".flake.lock"
		if err := writeFileAtomic(lockFile, lock); err != nil {
			return nil, fmt.Errorf("nixos-sd: writing %s: %w", lockFile, err)
		}
		r.partials = append(r.partials, lockFile)
		files = append(files, lockFile)
	}
	if res.BuildLog != "" {
		files = append(files, res.BuildLog)
	}
	return files, nil
}

// ManifestSchemaVersion is the version of the manifest's layout
// (docs/manifest.md); it changes when a field changes meaning or goes away.
const ManifestSchemaVersion = 1

// manifest is the image's JSON manifest (docs/manifest.md): what was built
// from what, its sums and the phases' timings. zst is true when the built
// file was compressed; remoteSum is then the compressed file's SHA-256.
func (r *run) manifest(res *Result, final, remoteSum string, zst bool) ([]byte, error) {
	cfg := r.cfg
	m := map[string]any{}
	for k, v := range r.opts.ManifestExtra {
		m[k] = v
	}
	timings := map[string]float64{}
	for k, v := range res.Timings {
		timings[k] = v.Round(time.Millisecond).Seconds()
	}
	m["schema_version"] = ManifestSchemaVersion
	m["plugin_version"] = version.PluginVersion.FormattedVersion()
	m["image"] = final
	m["size"] = res.Size
	m["sha256"] = res.SHA256
	m["compressed"] = res.Compressed
	if zst {
		m["compressed_sha256"] = remoteSum
		m["compressed_size"] = r.builtSize
	}
	m["remote_image"] = res.RemoteImage
	if res.BuildLog != "" {
		m["build_log"] = filepath.Base(res.BuildLog)
	}
	m["config_source"] = configSource(cfg)
	switch configSource(cfg) {
	case "flake":
		m["flake"] = cfg.Flake
		m["nixpkgs"] = "pinned by the flake"
	case "nixos_config":
		m["nixos_config"] = cfg.NixOSConfig
		m["nixpkgs"] = cfg.Nixpkgs
		if mod := pluginModule(cfg); mod != "" {
			m["plugin_module"] = mod
			if cfg.hostnameSet {
				m["hostname"] = cfg.Hostname
			}
			m["ssh_authorized_keys"] = len(cfg.SSHAuthorizedKeys)
		}
	default:
		m["nixpkgs"] = cfg.Nixpkgs
		m["hostname"] = cfg.Hostname
		m["ssh_authorized_keys"] = len(cfg.SSHAuthorizedKeys)
	}
	sum, err := configHash(cfg)
	if err != nil {
		return nil, fmt.Errorf("nixos-sd: hashing the configuration for the manifest: %w", err)
	}
	m["config_sha256"] = sum
	if c := r.cacheManifest(); c != nil {
		m["cache"] = c
	}
	m["nixpkgs_revision"] = res.Nixpkgs.Revision
	m["nixpkgs_version"] = res.Nixpkgs.Version
	m["nixpkgs_source"] = res.Nixpkgs.Source
	if res.Nixpkgs.URL != "" {
		m["nixpkgs_url"] = res.Nixpkgs.URL
	}
	if f := res.Nixpkgs.Flake; f != nil {
		if f.URL != "" {
			m["flake_locked_url"] = f.URL
		}
		if f.Revision != "" {
			m["flake_revision"] = f.Revision
		}
		m["flake_inputs"] = f.Inputs
	}
	if res.Nixpkgs.FlakeLockFile != nil {
		m["flake_lock"] = filepath.Base(res.ImagePath) + ".flake.lock"
	}
	nixOptions := cfg.NixOptions
	if nixOptions == nil {
		nixOptions = map[string]string{}
	}
	m["nix_options"] = nixOptions
	m["timings_seconds"] = timings
	m["created"] = time.Now().UTC().Format(time.RFC3339)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// UpdateManifest sets fields of the JSON manifest at path (the builder adds
// what it knows only after the build: the phases and the cost).
func UpdateManifest(path string, fields map[string]any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("nixos-sd: reading the manifest %s: %w", path, err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("nixos-sd: the manifest %s is not JSON: %w", path, err)
	}
	for k, v := range fields {
		m[k] = v
	}
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, append(out, '\n')); err != nil {
		return fmt.Errorf("nixos-sd: writing %s: %w", path, err)
	}
	return nil
}
