//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// TestProvisionerDownloadSurvivesDroppedConnections cuts every SSH
// connection of the download twice while it runs, through the real Packer
// and the provisioner: the host's sshd loses the processes serving each
// connection (its per-connection children, SIGKILLed with what they run), as
// when a NAT or a flaky link drops them. The download must reconnect (the
// communicator's connection and the provisioner's own), go on from what it
// has, and deliver the image the host built, verified.
func TestProvisionerDownloadSurvivesDroppedConnections(t *testing.T) {
	// Long enough to cut twice: about 85 MB compressed at 100 Mbit/s.
	p := startProvHost(t, testbed.HostPoolOptions{
		Link:    &testbed.LinkProfile{RateMbit: 100, RTT: 40 * time.Millisecond, TCPWindow: 4 << 20},
		StandIn: testbed.StandInOptions{ImageMiB: 256},
	})
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	writeTemplate(t, dir, "build.pkr.hcl", p.template(`    output_directory     = "out"
    download_connections = 3
    download_channels    = 2`))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var cuts []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, at := range []float64{0.25, 0.6} {
			if !waitDownloaded(out, at, stop) {
				return
			}
			n, err := killSSHDConnections(p.host)
			cuts = append(cuts, fmt.Sprintf("at %.0f%%: %d connections cut (%v)", at*100, n, err))
		}
	}()
	code := 0
	var output string
	func() {
		defer func() { close(stop); wg.Wait() }()
		output, code = packerBuild(t, dir)
	}()
	t.Logf("cuts: %s", strings.Join(cuts, "; "))
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, output)
	}
	if len(cuts) != 2 {
		t.Fatalf("the download ended before it was cut twice (%q): the test proves nothing; make the image larger or the link slower\n%s", cuts, output)
	}
	for _, c := range cuts {
		// The communicator's connection and at least one of our own.
		if !strings.Contains(c, "connections cut") || strings.Contains(c, ": 0 ") || strings.Contains(c, ": 1 ") {
			t.Fatalf("a cut did not drop several connections: %q", cuts)
		}
	}
	for _, want := range []string{"moving the download to 3 SSH connections of its own with 2 channels each", "resumed after a dropped channel or connection", "SHA-256 verified"} {
		if !strings.Contains(output, want) {
			t.Errorf("packer's output lacks %q", want)
		}
	}
	checkSDImage(t, filepath.Join(out, standInImage), p.builtImage(t))
	if t.Failed() {
		t.Logf("packer output:\n%s", output)
	}
}

// waitDownloaded waits until the partial download in out holds share of its
// size (its allocated blocks: the file is sparse until ranges land).
func waitDownloaded(out string, share float64, stop <-chan struct{}) bool {
	for {
		matches, _ := filepath.Glob(filepath.Join(out, "*.zst.partial"))
		for _, m := range matches {
			var st syscall.Stat_t
			if syscall.Stat(m, &st) == nil && st.Size > 0 && float64(st.Blocks*512) >= share*float64(st.Size) {
				return true
			}
		}
		select {
		case <-stop:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// killSSHDConnections SIGKILLs the processes serving each SSH connection of
// the host's sshd (its children and theirs) and returns how many connections
// it cut.
func killSSHDConnections(h *testbed.Host) (int, error) {
	b, err := os.ReadFile(filepath.Join(h.Dir, "state", "sshd", "sshd.pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, err
	}
	conns := children(pid)
	for _, c := range conns {
		killTree(c)
	}
	return len(conns), nil
}

func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func killTree(pid int) {
	// Stop it first so that its children cannot be reparented away.
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	for _, c := range children(pid) {
		killTree(c)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}
