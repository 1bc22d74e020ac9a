// Command webdocs writes .web-docs/, what HashiCorp's integration framework
// reads: the plugin's README, one README.md per component (packer-sdc's
// rendered page without its front matter and title, as the framework's
// compile-to-webdocs script does) and metadata.hcl with the integration's
// identity and component list. The components come from the plugin binary's
// `describe`, so a component without a page, or a page without a component,
// fails the generation. Run by scripts/generate.sh.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The integration's identity.
const (
	organization = "nixos-sd"
	repository   = "https://github.com/nixos-sd/packer-plugin-nixos-sd"
	// defaultName is what the plugin SDK reports for a component registered
	// under the plugin's own name.
	defaultName = "-packer-default-plugin-name-"
	pluginName  = "nixos-sd"
)

// description is the plugin's `describe` answer (the parts read here).
type description struct {
	Builders       []string `json:"builders"`
	Provisioners   []string `json:"provisioners"`
	PostProcessors []string `json:"post_processors"`
	Datasources    []string `json:"datasources"`
}

// component is one entry of metadata.hcl and its page.
type component struct {
	Type   string // builder, provisioner, post-processor, data-source
	Slug   string
	Source string // the rendered page, relative to the docs folder
}

func main() {
	docs := flag.String("docs", ".docs", "packer-sdc renderdocs output")
	out := flag.String("out", ".web-docs", "folder to write")
	describe := flag.String("describe", "", "file holding the plugin binary's `describe` JSON")
	flag.Parse()
	if err := run(*docs, *out, *describe); err != nil {
		fmt.Fprintln(os.Stderr, "webdocs:", err)
		os.Exit(1)
	}
}

func run(docs, out, describeFile string) error {
	raw, err := os.ReadFile(describeFile)
	if err != nil {
		return fmt.Errorf("reading the plugin's describe output: %w", err)
	}
	var d description
	if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("%s is not the plugin's describe JSON: %w", describeFile, err)
	}
	comps := components(d)
	if err := checkPages(docs, comps); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(out, "components")); err != nil {
		return err
	}
	readme, err := os.ReadFile(filepath.Join(docs, "README.md"))
	if err != nil {
		return fmt.Errorf("the plugin README: %w", err)
	}
	if err := write(filepath.Join(out, "README.md"), readme); err != nil {
		return err
	}
	for _, c := range comps {
		page, err := os.ReadFile(filepath.Join(docs, c.Source))
		if err != nil {
			return err
		}
		if err := write(filepath.Join(out, "components", c.Type, c.Slug, "README.md"), []byte(webPage(string(page)))); err != nil {
			return err
		}
	}
	return write(filepath.Join(out, "metadata.hcl"), []byte(metadata(comps)))
}

// components lists what the plugin registers, in metadata.hcl's order.
func components(d description) []component {
	var comps []component
	add := func(typ, folder string, names []string) {
		for _, n := range names {
			slug := n
			if n == defaultName {
				slug = pluginName
			}
			comps = append(comps, component{Type: typ, Slug: slug, Source: folder + "/" + slug + ".mdx"})
		}
	}
	add("builder", "builders", d.Builders)
	add("provisioner", "provisioners", d.Provisioners)
	add("post-processor", "post-processors", d.PostProcessors)
	add("data-source", "datasources", d.Datasources)
	return comps
}

// checkPages fails when a component has no rendered page or a page names no
// component.
func checkPages(docs string, comps []component) error {
	want := make([]string, 0, len(comps))
	for _, c := range comps {
		want = append(want, c.Source)
	}
	var problems []string
	for _, folder := range []string{"builders", "provisioners", "post-processors", "datasources"} {
		pages, _ := filepath.Glob(filepath.Join(docs, folder, "*.mdx"))
		for _, p := range pages {
			rel := folder + "/" + filepath.Base(p)
			if !slices.Contains(want, rel) {
				problems = append(problems, fmt.Sprintf("docs/%s documents no component the plugin registers; remove it or register the component in main.go", rel))
			}
		}
	}
	for _, c := range comps {
		if _, err := os.Stat(filepath.Join(docs, c.Source)); err != nil {
			problems = append(problems, fmt.Sprintf("the %s %q has no page; add docs/%s", c.Type, c.Slug, c.Source))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "\n"))
	}
	return nil
}

// webPage drops the page's front matter and its first heading: the
// integrations site adds its own title.
func webPage(page string) string {
	if rest, ok := strings.CutPrefix(page, "---\n"); ok {
		if _, body, found := strings.Cut(rest, "\n---\n"); found {
			page = body
		}
	}
	page = strings.TrimLeft(page, "\n")
	if strings.HasPrefix(page, "# ") {
		_, page, _ = strings.Cut(page, "\n")
	}
	return strings.TrimLeft(page, "\n")
}

// metadata is .web-docs/metadata.hcl as the integration framework reads it.
func metadata(comps []component) string {
	var b strings.Builder
	b.WriteString(`# Generated by make generate (cmd/webdocs) from the plugin's describe output; do not edit.
# Read by HashiCorp's integration framework together with the components/ folder beside it.
integration {
  name        = "NixOS SD"
  description = "Builds NixOS SD card images for Raspberry Pi and other AArch64 boards natively on an EC2 spot instance."
  identifier  = "packer/` + organization + `/` + pluginName + `"
  flags       = ["hcp-ready"]
  docs {
    process_docs    = true
    readme_location = "./README.md"
    external_url    = "` + repository + `"
  }
  license {
    type = "MPL-2.0"
    url  = "` + repository + `/blob/main/LICENSE"
  }
`)
	for _, c := range comps {
		fmt.Fprintf(&b, "  component {\n    type = %q\n    name = %q\n    slug = %q\n  }\n", c.Type, componentName(c), c.Slug)
	}
	b.WriteString("}\n")
	return b.String()
}

// componentName is the name the integrations site shows.
func componentName(c component) string {
	if c.Type == "data-source" {
		return pluginName + "-" + c.Slug
	}
	return c.Slug
}

func write(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
