//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// What a row of the fault matrix builds with. The builder (onEC2, the
// default) runs against the shared test bed's EC2; the provisioner (onHost)
// builds on a host the row starts, reached by a null source; the data source
// (lookup) answers a template that prints the AMI it found.

// bench runs a row's Packer: it writes the template into dir, runs Packer
// (acting while it runs when the row says so) and checks what only this
// bench can see; runScenario checks the rest.
type bench interface {
	run(t *testing.T, tb *testbed.Testbed, sc scenario, dir string) ran
}

// ran is what a row's Packer run gave.
type ran struct {
	out  string
	code int
	// outputDir is where the image goes; empty when the row makes none.
	outputDir string
}

// onEC2 is the builder on the test bed's EC2: a nixos-sd source with the
// row's extra attributes, region and provisioners.
type onEC2 struct{}

func (onEC2) run(t *testing.T, tb *testbed.Testbed, sc scenario, dir string) ran {
	const name = "mx"
	sources := fmt.Sprintf("  sources = [\"source.nixos-sd.%s\"]\n", name)
	tmpl := strings.Replace(netTemplate(tb, name, mxAttributes(sc.extra)), sources, sources+sc.build, 1)
	if sc.region != "" {
		tmpl = strings.Replace(tmpl, fmt.Sprintf("region        = %q", bldRegion), fmt.Sprintf("region        = %q", sc.region), 1)
	}
	writeTemplate(t, dir, "build.pkr.hcl", tmpl)
	r := ran{outputDir: filepath.Join(dir, "output-"+name)}
	if sc.during == nil {
		r.out, r.code = bldBuild(t, tb, dir, sc.args...)
		return r
	}
	var bp *bgPacker
	if sc.terminal {
		bp = startPackerOnTerminal(t, tb, dir, sc.args...)
	} else {
		bp = startPacker(t, tb, dir, sc.args...)
	}
	sc.during(t, tb, bp)
	r.out, r.code = waitPacker(t, bp)
	if !sc.killed {
		checkBuildReport(t, r.out)
	}
	return r
}

// waitPacker waits for Packer running in the background to end.
func waitPacker(t *testing.T, bp *bgPacker) (string, int) {
	t.Helper()
	out, code, ended := bp.wait(4 * time.Minute)
	if !ended {
		t.Fatalf("packer still ran 4 minutes into the scenario:\n%s", out)
	}
	// A terminal ends its lines with a carriage return too.
	return strings.ReplaceAll(out, "\r\n", "\n"), code
}

// onHost is the nixos-sd provisioner building on a test bed host the row
// starts, outside EC2, reached by a null source as another builder's
// instance would be. The image goes to "out" beside the template.
type onHost struct {
	pool testbed.HostPoolOptions // the host's Debian release, stand-in, link
	body string                  // attributes of the provisioner block
	// prepare changes the host before Packer runs (a faulty dd, a slow nix);
	// during acts while Packer runs; check looks at the host afterwards.
	prepare func(t *testing.T, h *provHost)
	during  func(t *testing.T, h *provHost, p *bgPacker)
	check   func(t *testing.T, h *provHost, out string)
	// keepsWorkDir says why the build leaves its working directory on the
	// host; empty = it must leave none.
	keepsWorkDir string
}

func (b onHost) run(t *testing.T, tb *testbed.Testbed, _ scenario, dir string) ran {
	h := startProvHost(t, b.pool)
	if b.prepare != nil {
		b.prepare(t, h)
	}
	writeTemplate(t, dir, "build.pkr.hcl", h.template(b.body+"\n    output_directory = \"out\""))
	r := ran{outputDir: filepath.Join(dir, "out")}
	if b.during == nil {
		r.out, r.code = packerRun(t, dir, nil, "build", "-color=false", ".")
	} else {
		bp := startPacker(t, tb, dir)
		b.during(t, h, bp)
		r.out, r.code = waitPacker(t, bp)
	}
	if r.code == 0 {
		checkSDImage(t, filepath.Join(r.outputDir, standInImage), h.builtImage(t))
	}
	switch left := h.remoteDirs(); {
	case b.keepsWorkDir == "" && len(left) > 0:
		t.Errorf("the build left its working directory on the host: %q", left)
	case len(left) > 1:
		t.Errorf("the build left %d working directories on the host (%q); %s explains one", len(left), left, b.keepsWorkDir)
	}
	if b.check != nil {
		b.check(t, h, r.out)
	}
	return r
}

// lookup runs the nixos-sd-debian-ami data source: packer validate or
// build of lookupTemplate, whose shell-local provisioner prints the AMI the
// data source found ("AMI=ami-...").
type lookup struct {
	command string   // validate or build
	vars    []string // -var settings ("region=us-east-2")
	// noRegion hides the test bed's AWS_REGION, as on a machine without any
	// region configured.
	noRegion bool
}

func (l lookup) run(t *testing.T, tb *testbed.Testbed, _ scenario, dir string) ran {
	writeTemplate(t, dir, "lookup.pkr.hcl", lookupTemplate)
	env := tb.Env()
	if l.noRegion {
		env = append(env, "AWS_REGION=", "AWS_DEFAULT_REGION=")
	}
	args := []string{l.command}
	if l.command == "build" {
		args = append(args, "-color=false")
	}
	for _, v := range l.vars {
		args = append(args, "-var", v)
	}
	out, code := packerRun(t, dir, env, append(args, "lookup.pkr.hcl")...)
	return ran{out: out, code: code}
}

// lookupTemplate prints the AMI of one data source, whose region and
// release are variables.
const lookupTemplate = `packer {
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

variable "release" {
  type    = string
  default = "trixie"
}

data "nixos-sd-debian-ami" "x" {
  region  = var.region
  release = var.release
}

source "null" "lookup" {
  communicator = "none"
}

build {
  sources = ["source.null.lookup"]
  provisioner "shell-local" {
    inline = ["echo 'AMI=${data.nixos-sd-debian-ami.x.id}'"]
  }
}
`
