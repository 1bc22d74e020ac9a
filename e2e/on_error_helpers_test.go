//go:build e2e

package e2e

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// Helpers of the fault matrix's rows for Packer's -on-error modes and
// -debug: a build block whose provisioner fails, with an
// error-cleanup-provisioner that leaves a marker beside the template, and
// Packer run on a terminal whose keys the test presses.

// failingProvisioners is a build block's provisioners: a shell provisioner
// that fails on the instance, and a shell-local error-cleanup-provisioner
// writing cleanupMarker.
const failingProvisioners = `  provisioner "shell" {
    inline = ["echo provisioning on $(hostname)", "exit 3"]
  }
  error-cleanup-provisioner "shell-local" {
    inline = ["echo cleaned up > ${path.root}/` + cleanupMarker + `"]
  }
`

// cleanupMarker is the file the error-cleanup-provisioner writes.
const cleanupMarker = "error-cleanup-ran"

// provisionerFailed is what Packer says of the failing shell provisioner.
const provisionerFailed = "Script exited with non-zero exit status: 3"

// markerWritten checks the error-cleanup-provisioner ran (want) or not.
func markerWritten(want bool) func(t *testing.T, tb *testbed.Testbed, dir, out string) {
	return func(t *testing.T, _ *testbed.Testbed, dir, _ string) {
		t.Helper()
		_, err := os.Stat(filepath.Join(dir, cleanupMarker))
		if got := err == nil; got != want {
			t.Errorf("the error-cleanup-provisioner's marker exists: %v, want %v", got, want)
		}
	}
}

// keptAndListed checks the error-cleanup-provisioner ran (marker) and that
// the build listed what it left for the user, then removes it as the
// message says, which must leave EC2 empty (the leak check follows).
func keptAndListed(marker bool) func(t *testing.T, tb *testbed.Testbed, dir, out string) {
	return func(t *testing.T, tb *testbed.Testbed, dir, out string) {
		t.Helper()
		markerWritten(marker)(t, tb, dir, out)
		if strings.Contains(out, "Terminating instance") {
			t.Errorf("the build terminated its instance although -on-error keeps it")
		}
		leaks, err := tb.Leaks(motoCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(leaks) == 0 {
			t.Fatal("the build left nothing in EC2; -on-error should have kept the instance, the fleet, the template and the group")
		}
		// Each resource is named by the message, or belongs to an instance
		// it names (the volume, the spot request).
		named := regexp.MustCompile(`aws ec2 (?:terminate-instances|delete-fleets|delete-launch-template|delete-security-group) --region \S+ --\S+ (\S+)`).FindAllStringSubmatch(out, -1)
		for _, l := range leaks {
			ok := false
			for _, m := range named {
				ok = ok || strings.Contains(l, m[1])
			}
			if !ok {
				t.Errorf("the test bed lists %q, which the build's message does not name", l)
			}
		}
		removeAsPrinted(t, tb, dir, out)
	}
}

// startPackerOnTerminal starts `packer build -color=false <args> .` in dir
// on a terminal of its own (script(1) gives it a pseudo-terminal, which
// Packer needs to ask anything), whose keys p.keys presses.
func startPackerOnTerminal(t *testing.T, tb *testbed.Testbed, dir string, args ...string) *bgPacker {
	t.Helper()
	name, argv := withTestbedHosts(tb.Env(), packerBin, append(append([]string{"build", "-color=false"}, args...), "."))
	line := shellQuote(name)
	for _, a := range argv {
		line += " " + shellQuote(a)
	}
	cmd := exec.Command("script", "--quiet", "--flush", "--return", "--echo", "never", "--command", line, "/dev/null")
	cmd.Dir = dir
	cmd.Env = append(baseEnv(), tb.Env()...)
	keys, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &bgPacker{cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{}), keys: keys}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting packer on a terminal: %v", err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		keys.Close()
		select {
		case <-p.done:
		case <-time.After(packerInterruptGrace):
			// script hangs the terminal up when it dies: Packer gets SIGHUP.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("packer build output:\n%s", p.out.String())
		}
	})
	return p
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// debugPrompt ends every question Packer asks under -debug.
const debugPrompt = "Press enter to continue."

// answerDebugPauses presses Enter once for each -debug pause, until Packer
// ends (at most 4 minutes). Before answering a pause named in checks, it
// waits a moment and runs the check: the build must really be waiting
// there.
func answerDebugPauses(t *testing.T, p *bgPacker, checks map[string]func()) {
	t.Helper()
	answered := 0
	seen := map[string]bool{}
	deadline := time.Now().Add(4 * time.Minute)
	for !p.exited() {
		if time.Now().After(deadline) {
			t.Errorf("packer still ran 4 minutes into the -debug build, after %d pauses answered", answered)
			return
		}
		out := p.out.String()
		if strings.Count(out, debugPrompt) <= answered {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for pause, check := range checks {
			if !seen[pause] && strings.Contains(out, pause) {
				seen[pause] = true
				time.Sleep(2 * time.Second)
				check()
			}
		}
		answered++
		// Enter: Packer reads the terminal raw, up to a carriage return.
		if _, err := io.WriteString(p.keys, "\r"); err != nil {
			t.Fatalf("pressing Enter: %v", err)
		}
	}
	for pause := range checks {
		if !seen[pause] {
			t.Errorf("-debug never paused at %q", pause)
		}
	}
}
