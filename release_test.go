package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// goreleaserConfig is the part of .goreleaser.yml these tests read.
type goreleaserConfig struct {
	ProjectName string `yaml:"project_name"`
	Builds      []struct {
		Goos    []string `yaml:"goos"`
		Goarch  []string `yaml:"goarch"`
		Ignore  []any    `yaml:"ignore"`
		Binary  string   `yaml:"binary"`
		Ldflags []string `yaml:"ldflags"`
	} `yaml:"builds"`
	Archives []struct {
		Formats      []string `yaml:"formats"`
		NameTemplate string   `yaml:"name_template"`
		Files        []any    `yaml:"files"`
	} `yaml:"archives"`
	Checksum struct {
		NameTemplate string `yaml:"name_template"`
		Algorithm    string `yaml:"algorithm"`
	} `yaml:"checksum"`
	Signs []struct {
		Artifacts string `yaml:"artifacts"`
	} `yaml:"signs"`
	Release struct {
		Draft bool `yaml:"draft"`
	} `yaml:"release"`
}

// TestGoreleaserConfig checks .goreleaser.yml against what Packer's GitHub
// getter installs: every target once, archives and checksum file named
// packer-plugin-nixos-sd_v{version}_x{api}_{os}_{arch}.zip and
// packer-plugin-nixos-sd_v{version}_SHA256SUMS, the version from the tag, a
// signed checksum file, a published release. CI builds only its own target
// (scripts/snapshot.sh), so the target list is checked here.
func TestGoreleaserConfig(t *testing.T) {
	raw, err := os.ReadFile(".goreleaser.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c goreleaserConfig
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if c.ProjectName != "packer-plugin-nixos-sd" {
		t.Errorf("project_name = %q", c.ProjectName)
	}
	if len(c.Builds) != 1 {
		t.Fatalf("%d builds; one build makes each target once", len(c.Builds))
	}
	b := c.Builds[0]
	var targets []string
	for _, os := range b.Goos {
		for _, arch := range b.Goarch {
			targets = append(targets, os+"_"+arch)
		}
	}
	slices.Sort(targets)
	want := []string{"darwin_amd64", "darwin_arm64", "freebsd_amd64", "freebsd_arm64", "linux_amd64", "linux_arm64", "windows_amd64", "windows_arm64"}
	if !slices.Equal(targets, want) || len(b.Ignore) != 0 {
		t.Errorf("targets %v (ignore %v), want %v", targets, b.Ignore, want)
	}
	// scripts/snapshot.sh narrows CI's snapshot by rewriting these two lines.
	for _, key := range []string{"goos", "goarch"} {
		if n := len(regexp.MustCompile(`(?m)^\s*`+key+`: \[.*\]$`).FindAll(raw, -1)); n != 1 {
			t.Errorf(".goreleaser.yml has %d '%s: [...]' lines; scripts/snapshot.sh needs exactly one", n, key)
		}
	}
	name := "{{ .ProjectName }}_v{{ .Version }}_{{ .Env.API_VERSION }}_{{ .Os }}_{{ .Arch }}"
	if b.Binary != name {
		t.Errorf("binary = %q, want %q (the name Packer looks for in the zip)", b.Binary, name)
	}
	ldflags := strings.Join(b.Ldflags, " ")
	for _, flag := range []string{"-X {{ .ModulePath }}/version.Version={{ .Version }}", "-X {{ .ModulePath }}/version.VersionPrerelease="} {
		if !strings.Contains(ldflags, flag) {
			t.Errorf("ldflags %q lack %q: the binary must report the tag's version", ldflags, flag)
		}
	}
	if len(c.Archives) != 1 {
		t.Fatalf("%d archives, want 1", len(c.Archives))
	}
	a := c.Archives[0]
	if !slices.Equal(a.Formats, []string{"zip"}) || a.NameTemplate != name {
		t.Errorf("archive formats %v, name %q; want [zip], %q", a.Formats, a.NameTemplate, name)
	}
	// A glob makes GoReleaser walk the tree from '.', into .cache (Debian
	// roots, mounted /proc). scripts/snapshot.sh proves it with a canary.
	if len(a.Files) == 0 {
		t.Error("archive files unset: GoReleaser then globs README*, LICENSE* ... over the whole tree")
	}
	for _, f := range a.Files {
		s, ok := f.(string)
		if !ok || strings.ContainsAny(s, "*?[{") {
			t.Errorf("archive file %v: name files without glob patterns", f)
		} else if _, err := os.Stat(s); err != nil {
			t.Errorf("archive file %s: %v", s, err)
		}
	}
	if c.Checksum.NameTemplate != "{{ .ProjectName }}_v{{ .Version }}_SHA256SUMS" || c.Checksum.Algorithm != "sha256" {
		t.Errorf("checksum %+v; Packer fetches packer-plugin-nixos-sd_v{version}_SHA256SUMS", c.Checksum)
	}
	if len(c.Signs) != 1 || c.Signs[0].Artifacts != "checksum" {
		t.Errorf("signs %+v; the checksum file must be signed", c.Signs)
	}
	if c.Release.Draft {
		t.Error("release.draft is true: Packer cannot install from a draft release")
	}
}

// TestReleaseWorkflow checks that a v* tag runs GoReleaser, the version
// pinned in tools/goreleaser, with the signing key.
func TestReleaseWorkflow(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(".github", "workflows", "release.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		On struct {
			Push struct {
				Tags []string `yaml:"tags"`
			} `yaml:"push"`
		} `yaml:"on"`
		Jobs map[string]struct {
			Steps []struct {
				Run string            `yaml:"run"`
				Env map[string]string `yaml:"env"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(raw, &w); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.On.Push.Tags, []string{"v*"}) {
		t.Errorf("on.push.tags = %v, want [v*]", w.On.Push.Tags)
	}
	found := false
	for _, step := range w.Jobs["goreleaser"].Steps {
		if strings.Contains(step.Run, "scripts/goreleaser-bin.sh") && strings.Contains(step.Run, "release --clean") {
			found = true
			for _, k := range []string{"GPG_FINGERPRINT", "GITHUB_TOKEN", "API_VERSION"} {
				if step.Env[k] == "" {
					t.Errorf("the GoReleaser step does not set %s", k)
				}
			}
		}
	}
	if !found {
		t.Error("no step runs the pinned GoReleaser (scripts/goreleaser-bin.sh) with release --clean")
	}
}

// TestGoreleaserPinned checks that the tools module pins GoReleaser at an
// exact version and that the plugin's own go.mod does not carry it.
func TestGoreleaserPinned(t *testing.T) {
	tools, err := os.ReadFile(filepath.Join("tools", "goreleaser", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*github\.com/goreleaser/goreleaser/v2 v\d+\.\d+\.\d+`).Match(tools) ||
		!strings.Contains(string(tools), "tool github.com/goreleaser/goreleaser/v2") {
		t.Errorf("tools/goreleaser/go.mod does not pin GoReleaser as a tool:\n%s", tools)
	}
	own, err := exec.Command("go", "list", "-m", "all").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(own), "goreleaser/goreleaser") {
		t.Error("the plugin's go.mod requires GoReleaser; keep it in tools/goreleaser")
	}
}
