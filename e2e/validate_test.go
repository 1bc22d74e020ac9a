//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestValidateExamples: the checked-in examples initialise (offline: the
// plugin is installed) and validate with the installed plugin.
func TestValidateExamples(t *testing.T) {
	examples := filepath.Join(t.TempDir(), "example")
	copyTree(t, filepath.Join(repoRoot(t), "example"), examples)
	// A user's AWS configuration gives the region to the examples that do
	// not set one (minimal).
	env := []string{"AWS_REGION=us-east-2"}
	for _, dir := range []string{".", "minimal", "flake", "datasource", "provisioner"} {
		t.Run(dir, func(t *testing.T) {
			wd := filepath.Join(examples, dir)
			out, code := packerRun(t, wd, env, "init", ".")
			if code != 0 {
				t.Fatalf("packer init . in example/%s exited %d:\n%s", dir, code, out)
			}
			out, code = packerRun(t, wd, env, "validate", ".")
			if code != 0 {
				t.Fatalf("packer validate . in example/%s exited %d:\n%s", dir, code, out)
			}
			if !strings.Contains(out, "The configuration is valid") {
				t.Errorf("packer validate in example/%s exited 0 without saying the configuration is valid:\n%s", dir, out)
			}
			if out, code := packerRun(t, wd, env, "fmt", "-check", "-diff", "."); code != 0 {
				t.Errorf("example/%s is not as packer fmt writes it:\n%s", dir, out)
			}
		})
	}
}

// TestValidateDescribe: the plugin binary announces its components under the
// names the templates use (nixos-sd, nixos-sd-debian-ami).
func TestValidateDescribe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, pluginBin, "describe").Output()
	if err != nil {
		t.Fatalf("%s describe: %v", pluginBin, err)
	}
	var d struct {
		Version        string   `json:"version"`
		APIVersion     string   `json:"api_version"`
		Builders       []string `json:"builders"`
		Provisioners   []string `json:"provisioners"`
		PostProcessors []string `json:"post_processors"`
		Datasources    []string `json:"datasources"`
	}
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("describe printed no JSON: %v\n%s", err, out)
	}
	const def = "-packer-default-plugin-name-"
	if !reflect.DeepEqual(d.Builders, []string{def}) {
		t.Errorf("builders = %q, want [%q]", d.Builders, def)
	}
	if !reflect.DeepEqual(d.Provisioners, []string{def}) {
		t.Errorf("provisioners = %q, want [%q]", d.Provisioners, def)
	}
	if !reflect.DeepEqual(d.Datasources, []string{"debian-ami"}) {
		t.Errorf("datasources = %q, want [\"debian-ami\"]", d.Datasources)
	}
	if len(d.PostProcessors) != 0 {
		t.Errorf("post_processors = %q, want none", d.PostProcessors)
	}
	if d.Version == "" || d.APIVersion == "" {
		t.Errorf("describe lacks version or api_version: %s", out)
	}
}

// TestValidateRejectsInvalid: every template in testdata/invalid fails
// `packer validate` with the message its `# expect:` lines name.
func TestValidateRejectsInvalid(t *testing.T) {
	src := filepath.Join(repoRoot(t), "e2e", "testdata", "invalid")
	files, err := filepath.Glob(filepath.Join(src, "*.pkr.hcl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no templates in %s (%v)", src, err)
	}
	dir := filepath.Join(t.TempDir(), "invalid")
	copyTree(t, src, dir)
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(strings.TrimSuffix(name, ".pkr.hcl"), func(t *testing.T) {
			expect := expectations(t, f)
			out, code := packerRun(t, dir, nil, "validate", name)
			if code == 0 {
				t.Fatalf("packer validate %s passed; it must fail with %q", name, expect)
			}
			got := normalizeSpace(out)
			for _, e := range expect {
				if !strings.Contains(got, normalizeSpace(e)) {
					t.Errorf("packer validate %s (exit %d) does not say %q (its output is logged below)", name, code, e)
				}
			}
			if strings.Contains(out, "panic:") || strings.Contains(out, "plugin exited before we could connect") {
				t.Errorf("the plugin crashed validating %s:\n%s", name, out)
			}
		})
	}
}

// expectations reads a template's `# expect: TEXT` lines: texts that must all
// appear in Packer's output when it rejects the template.
func expectations(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var expect []string
	for _, line := range strings.Split(string(b), "\n") {
		if text, ok := strings.CutPrefix(strings.TrimSpace(line), "# expect:"); ok {
			if text = strings.TrimSpace(text); text != "" {
				expect = append(expect, text)
			}
		}
	}
	if len(expect) == 0 {
		t.Fatalf("%s has no `# expect: TEXT` line naming the message packer validate must print", file)
	}
	return expect
}
