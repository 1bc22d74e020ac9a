//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// hclBlock is a fenced HCL block of a Markdown page.
var hclBlock = regexp.MustCompile("(?s)```hcl\n(.*?)```")

// TestValidateDocSnippets: every HCL block of README.md and docs/ that is a
// whole template (it has a build block) passes `packer validate` beside the
// files it names (a configuration.nix, a flake), and every HCL block is as
// `packer fmt` writes it.
func TestValidateDocSnippets(t *testing.T) {
	root := repoRoot(t)
	pages, _ := filepath.Glob(filepath.Join(root, "docs", "*", "*.md*"))
	more, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	pages = append(append(pages, more...), filepath.Join(root, "README.md"))
	validated := 0
	for _, page := range pages {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, page)
		for i, m := range hclBlock.FindAllStringSubmatch(string(b), -1) {
			block := m[1]
			dir := t.TempDir()
			writeTemplate(t, dir, "snippet.pkr.hcl", block)
			if out, code := packerRun(t, dir, nil, "fmt", "-check", "-diff", "snippet.pkr.hcl"); code != 0 {
				t.Errorf("%s, HCL block %d is not as packer fmt writes it:\n%s", rel, i+1, out)
			}
			if !strings.Contains(block, "build {") && !strings.Contains(block, "build{") {
				continue
			}
			if !strings.Contains(block, "required_plugins") {
				writeTemplate(t, dir, "plugins.pkr.hcl", bldPluginBlock)
			}
			writeTemplate(t, dir, "configuration.nix", "{ ... }: { }\n")
			os.MkdirAll(filepath.Join(dir, "pi-flake"), 0o755)
			writeTemplate(t, filepath.Join(dir, "pi-flake"), "flake.nix", "{ outputs = _: { }; }\n")
			env := []string{"AWS_REGION=us-east-2"}
			if out, code := packerRun(t, dir, env, "init", "."); code != 0 {
				t.Errorf("%s, HCL block %d: packer init exited %d:\n%s", rel, i+1, code, out)
				continue
			}
			out, code := packerRun(t, dir, env, "validate", ".")
			if code != 0 {
				t.Errorf("%s, HCL block %d fails packer validate (exit %d):\n%s\n%s", rel, i+1, code, block, out)
			}
			validated++
		}
	}
	if validated == 0 {
		t.Fatal("no HCL block of the docs is a whole template")
	}
	t.Logf("%d HCL blocks validated", validated)
}
