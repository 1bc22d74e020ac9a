//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// TestProvisionerWorkDirCannotBeHijacked: another local user of the host
// prepared the old predictable path /tmp/nixos-sd in advance, as a symlink
// to a directory of their own (where they could swap the configuration or
// the result between upload and build). The build must work in a fresh
// private directory and put nothing there.
func TestProvisionerWorkDirCannotBeHijacked(t *testing.T) {
	p := startProvHost(t, testbed.HostPoolOptions{})
	hostTmp := filepath.Join(p.host.Dir, "tmp")
	attacker := filepath.Join(hostTmp, "attacker")
	if err := os.Mkdir(attacker, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(attacker, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(attacker, 65534, 65534); err != nil { // nobody
		t.Fatal(err)
	}
	if err := os.Symlink("/tmp/attacker", filepath.Join(hostTmp, "nixos-sd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(hostTmp, "nixos-sd"), 65534, 65534); err != nil {
		t.Fatal(err)
	}

	// Watch the attacker's directory for the whole build.
	var planted atomic.Int32
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if entries, _ := os.ReadDir(attacker); len(entries) > 0 {
				planted.Add(1)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", p.template(`    output_directory = "out"`))
	out, code := packerBuild(t, dir)
	close(stop)
	<-done
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	checkSDImage(t, filepath.Join(dir, "out", standInImage), p.builtImage(t))
	if n := planted.Load(); n != 0 {
		t.Errorf("the build wrote into the directory planted at /tmp/nixos-sd (seen %d times)", n)
	}
	calls := p.standInCalls(t)
	if !workDirPath.MatchString(calls) {
		t.Errorf("nix did not run in a mktemp -d working directory:\n%s", calls)
	}
	if left := p.remoteDirs(); len(left) != 0 {
		t.Errorf("the working directory was left on the host: %q", left)
	}
	if target, err := os.Readlink(filepath.Join(hostTmp, "nixos-sd")); err != nil || target != "/tmp/attacker" {
		t.Errorf("the planted symlink was changed: %q %v", target, err)
	}
}
