package testbed

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// SnapshotDistEnv names the folder of a snapshot release (scripts/snapshot.sh
// prints it; `make e2e` sets it).
const SnapshotDistEnv = "NIXOS_SD_SNAPSHOT_DIST"

// Snapshot is a snapshot release for this machine's OS and architecture, as
// GoReleaser wrote it.
type Snapshot struct {
	// Version is the release's version without the "v".
	Version string
	// SumsName and Sums are the checksum file.
	SumsName string
	Sums     []byte
	// ZipName and Zip are this platform's archive.
	ZipName string
	Zip     []byte
	// BinaryName and Binary are the plugin binary the archive holds.
	BinaryName string
	Binary     []byte
}

// LoadSnapshot reads the snapshot in dist: the one *_SHA256SUMS file, the
// archive of this platform it lists, and the binary in that archive.
func LoadSnapshot(dist string) (*Snapshot, error) {
	sumsFiles, _ := filepath.Glob(filepath.Join(dist, "packer-plugin-nixos-sd_v*_SHA256SUMS"))
	if len(sumsFiles) != 1 {
		return nil, fmt.Errorf("%s holds %d packer-plugin-nixos-sd_v*_SHA256SUMS files, want 1; build the snapshot with scripts/snapshot.sh", dist, len(sumsFiles))
	}
	s := &Snapshot{SumsName: filepath.Base(sumsFiles[0])}
	s.Version = strings.TrimSuffix(strings.TrimPrefix(s.SumsName, "packer-plugin-nixos-sd_v"), "_SHA256SUMS")
	var err error
	if s.Sums, err = os.ReadFile(sumsFiles[0]); err != nil {
		return nil, err
	}
	suffix := "_" + runtime.GOOS + "_" + runtime.GOARCH + ".zip"
	for _, line := range strings.Split(string(s.Sums), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasSuffix(f[1], suffix) {
			s.ZipName = f[1]
		}
	}
	if s.ZipName == "" {
		return nil, fmt.Errorf("%s lists no archive for %s_%s:\n%s", s.SumsName, runtime.GOOS, runtime.GOARCH, s.Sums)
	}
	if s.Zip, err = os.ReadFile(filepath.Join(dist, s.ZipName)); err != nil {
		return nil, err
	}
	s.BinaryName = strings.TrimSuffix(s.ZipName, ".zip")
	zr, err := zip.NewReader(bytes.NewReader(s.Zip), int64(len(s.Zip)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.ZipName, err)
	}
	for _, f := range zr.File {
		if f.Name != s.BinaryName {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return nil, err
		}
		s.Binary, err = io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
	}
	if s.Binary == nil {
		return nil, fmt.Errorf("%s holds no %s", s.ZipName, s.BinaryName)
	}
	return s, nil
}

// Release is the snapshot as release assets of tag "v<Version>", with the
// checksum file's content replaced by sums when sums is not nil.
func (s *Snapshot) Release(sums []byte) map[string]map[string][]byte {
	if sums == nil {
		sums = s.Sums
	}
	return map[string]map[string][]byte{"v" + s.Version: {s.SumsName: sums, s.ZipName: s.Zip}}
}

// StartSnapshotRelease serves the snapshot in $NIXOS_SD_SNAPSHOT_DIST as
// the plugin's GitHub release.
func StartSnapshotRelease(dir string) (*ReleaseHost, *Snapshot, error) {
	dist := os.Getenv(SnapshotDistEnv)
	if dist == "" {
		return nil, nil, fmt.Errorf("%s is not set; `make e2e` builds the snapshot (NIXOS_SD_SNAPSHOT_TARGET=host scripts/snapshot.sh) and sets it to the folder the script prints", SnapshotDistEnv)
	}
	s, err := LoadSnapshot(dist)
	if err != nil {
		return nil, nil, err
	}
	h, err := StartReleaseHost(dir, PluginRepo, s.Release(nil))
	return h, s, err
}

// PluginRepo is the plugin's GitHub repository, where required_plugins'
// source github.com/nixos-sd/nixos-sd leads Packer.
const PluginRepo = "nixos-sd/packer-plugin-nixos-sd"
