//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// dsLookup is one data source block of the lookup template.
type dsLookup struct {
	label             string
	release           string // as written in the template
	releaseNumber     int
	codename          string
	arch              string // Debian's: arm64 or amd64
	includeDeprecated bool
	viaOption         bool // ec2_endpoint = var.endpoint instead of AWS_ENDPOINT_URL_EC2
}

// dsLookups are looked up in every catalogue region. release 12 is written
// as a codename, 13 as a number; amd64 and include_deprecated once each.
var dsLookups = []dsLookup{
	{label: "bookworm", release: "bookworm", releaseNumber: 12, codename: "bookworm", arch: "arm64"},
	{label: "trixie", release: "13", releaseNumber: 13, codename: "trixie", arch: "arm64"},
	{label: "trixie_amd64", release: "trixie", releaseNumber: 13, codename: "trixie", arch: "amd64", viaOption: true},
	{label: "bookworm_deprecated", release: "12", releaseNumber: 12, codename: "bookworm", arch: "arm64", includeDeprecated: true},
}

func dsLookupTemplate(lookups []dsLookup) string {
	var b strings.Builder
	b.WriteString(`packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

variable "region" {
  type = string
}

variable "endpoint" {
  type = string
}
`)
	var echo []string
	for _, l := range lookups {
		fmt.Fprintf(&b, "\ndata \"nixos-sd-debian-ami\" %q {\n  region  = var.region\n  release = %q\n", l.label, l.release)
		if l.arch != "arm64" {
			fmt.Fprintf(&b, "  architecture = %q\n", l.arch)
		}
		if l.includeDeprecated {
			b.WriteString("  include_deprecated = true\n")
		}
		if l.viaOption {
			b.WriteString("  ec2_endpoint = var.endpoint\n")
		}
		b.WriteString("}\n")
		d := "data.nixos-sd-debian-ami." + l.label
		echo = append(echo, fmt.Sprintf(`    "echo 'DS|%s|${%s.id}|${%s.name}|${%s.release}|${%s.architecture}|${%s.owner}|${%s.creation_date}|${%s.deprecation_time}|${%s.boot_mode}|END'",`,
			l.label, d, d, d, d, d, d, d, d))
	}
	b.WriteString(`
source "null" "lookup" {
  communicator = "none"
}

build {
  sources = ["source.null.lookup"]
  provisioner "shell-local" {
    inline = [
`)
	b.WriteString(strings.Join(echo, "\n"))
	b.WriteString(`
    ]
  }
}
`)
	return b.String()
}

var dsLine = regexp.MustCompile(`DS\|([a-z0-9_]+)\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|END`)

// dsExpected is the image the lookup must return, computed from the test
// bed's catalogue without the plugin's code: Debian's own, the release and
// architecture asked for, not deprecated now unless allowed, newest creation
// date, then the greatest name.
func dsExpected(region string, l dsLookup) (testbed.CatalogueImage, bool) {
	ec2Arch := map[string]string{"arm64": "arm64", "amd64": "x86_64"}[l.arch]
	var c []testbed.CatalogueImage
	for _, img := range testbed.Catalogue() {
		if img.Region == region && img.Owner == testbed.DebianOwner && img.Release == l.releaseNumber &&
			img.Architecture == ec2Arch && (l.includeDeprecated || !img.Deprecated()) {
			c = append(c, img)
		}
	}
	if len(c) == 0 {
		return testbed.CatalogueImage{}, false
	}
	sort.Slice(c, func(i, j int) bool {
		if !c[i].CreationDate.Equal(c[j].CreationDate) {
			return c[i].CreationDate.After(c[j].CreationDate)
		}
		return c[i].Name > c[j].Name
	})
	return c[0], true
}

func rfc3339(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// TestDatasourceLookup: in each catalogue region, `packer build` of a template
// using the data source prints the newest non-deprecated official Debian AMI
// for each release and architecture, never the impostor's newer look-alike.
func TestDatasourceLookup(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	writeTemplate(t, dir, "lookup.pkr.hcl", dsLookupTemplate(dsLookups))

	for _, region := range testbed.CatalogueRegions {
		t.Run(region, func(t *testing.T) {
			tb.Proxy().ResetCalls()
			out, code := packerRun(t, dir, tb.Env(), "build", "-color=false",
				"-var", "region="+region, "-var", "endpoint="+tb.EC2Endpoint(), "lookup.pkr.hcl")
			if code != 0 {
				t.Fatalf("packer build exited %d", code)
			}
			got := map[string][]string{}
			for _, m := range dsLine.FindAllStringSubmatch(out, -1) {
				got[m[1]] = m[2:]
			}
			for _, l := range dsLookups {
				want, ok := dsExpected(region, l)
				if !ok {
					t.Fatalf("the catalogue has no %s %s image in %s; the test's lookups must all exist", l.label, l.arch, region)
				}
				if want.Owner != testbed.DebianOwner || strings.HasSuffix(want.Name, "-9999") {
					t.Fatalf("expected image %s is not Debian's", want.ID)
				}
				g, ok := got[l.label]
				if !ok {
					t.Errorf("%s: packer printed no line for it", l.label)
					continue
				}
				wantFields := []string{want.ID, want.Name, l.codename, want.Architecture, testbed.DebianOwner,
					want.CreationDate.UTC().Format(time.RFC3339), rfc3339(want.DeprecationTime), want.BootMode}
				names := []string{"id", "name", "release", "architecture", "owner", "creation_date", "deprecation_time", "boot_mode"}
				for i := range names {
					if g[i] != wantFields[i] {
						t.Errorf("%s in %s: %s = %q, want %q", l.label, region, names[i], g[i], wantFields[i])
					}
				}
			}

			// The lookups went to the region asked for, with Debian's owner
			// and IncludeDeprecated, and the data source changed nothing.
			calls := tb.Proxy().CallsOf("DescribeImages")
			if len(calls) != len(dsLookups) {
				t.Errorf("%d DescribeImages calls, want %d (one per data source)", len(calls), len(dsLookups))
			}
			for _, c := range calls {
				if c.Region != region || c.Params["Owner.1"] != testbed.DebianOwner || c.Params["IncludeDeprecated"] != "true" || c.Status != 200 {
					t.Errorf("DescribeImages call %d: region %s, status %d, params %v", c.Seq, c.Region, c.Status, c.Params)
				}
			}
			if m := tb.Proxy().MutatingCalls(); len(m) != 0 {
				t.Errorf("the data source made mutating calls: %+v", m)
			}
		})
	}
}
