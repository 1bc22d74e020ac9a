package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	docs, out := t.TempDir(), t.TempDir()
	files := map[string]string{
		"README.md":                  "# Plugin\n",
		"builders/nixos-sd.mdx":      "---\npage_title: x\n---\n\n# nixos-sd\n\nType: `nixos-sd`\n",
		"datasources/debian-ami.mdx": "---\nnav_title: debian-ami\n---\n\n# debian-ami\n\nBody\n",
	}
	for name, content := range files {
		p := filepath.Join(docs, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	describe := filepath.Join(t.TempDir(), "describe.json")
	write(describe, []byte(`{"builders":["-packer-default-plugin-name-"],"provisioners":[],"datasources":["debian-ami"]}`))
	if err := run(docs, out, describe); err != nil {
		t.Fatal(err)
	}
	page, _ := os.ReadFile(filepath.Join(out, "components", "builder", "nixos-sd", "README.md"))
	if string(page) != "Type: `nixos-sd`\n" {
		t.Errorf("builder page = %q: the front matter and title must go", page)
	}
	meta, _ := os.ReadFile(filepath.Join(out, "metadata.hcl"))
	for _, want := range []string{
		`identifier  = "packer/nixos-sd/nixos-sd"`,
		"component {\n    type = \"builder\"\n    name = \"nixos-sd\"\n    slug = \"nixos-sd\"\n  }",
		"component {\n    type = \"data-source\"\n    name = \"nixos-sd-debian-ami\"\n    slug = \"debian-ami\"\n  }",
	} {
		if !strings.Contains(string(meta), want) {
			t.Errorf("metadata.hcl lacks %q:\n%s", want, meta)
		}
	}

	// A registered component without a page, and a page without a component.
	write(describe, []byte(`{"builders":["-packer-default-plugin-name-"],"provisioners":["-packer-default-plugin-name-"],"datasources":[]}`))
	err := run(docs, out, describe)
	if err == nil || !strings.Contains(err.Error(), "docs/provisioners/nixos-sd.mdx") || !strings.Contains(err.Error(), "docs/datasources/debian-ami.mdx documents no component") {
		t.Errorf("run = %v; want both problems named", err)
	}
}
