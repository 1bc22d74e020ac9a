package builder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd/remotecmdtest"
)

// The watchdog script runs in a real shell: it must shut the host down once
// the heartbeat stops, and not while it goes on.
func TestWatchdogShutsDownWhenHeartbeatStops(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "shutdown-called")
	wd := watchdog{
		timeout:  3 * time.Second,
		tmp:      dir,
		shutdown: "touch " + remotecmd.Quote(marker),
	}
	comm := &remotecmdtest.Local{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := remotecmd.Output(ctx, comm, wd.armCommand())
	if err != nil {
		t.Fatalf("arming: %v", err)
	}
	wd.file = strings.TrimSpace(string(out))
	if filepath.Base(wd.file) != "heartbeat" || !strings.HasPrefix(filepath.Dir(wd.file), filepath.Join(dir, "nixos-sd-watchdog.")) {
		t.Fatalf("heartbeat file %q, want heartbeat in a new nixos-sd-watchdog.* of %s", wd.file, dir)
	}
	if st, err := os.Stat(filepath.Dir(wd.file)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("the heartbeat's directory: %v %v, want mode 0700", st.Mode(), err)
	}
	t.Cleanup(func() { _ = exec(comm, "pkill -f "+remotecmd.Quote(wd.file)) })

	// Beat for twice the timeout: no shutdown.
	for end := time.Now().Add(2 * wd.timeout); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if _, err := remotecmd.Output(ctx, comm, wd.beatCommand()); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("the watchdog shut down while the heartbeat went on")
		}
	}
	// Stop beating: the shutdown command runs within timeout plus one check.
	deadline := time.Now().Add(wd.timeout + 5*time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no shutdown %s after the last heartbeat", wd.timeout+5*time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func exec(comm *remotecmdtest.Local, cmd string) error {
	_, err := remotecmd.Output(context.Background(), comm, cmd)
	return err
}

func TestWatchdogCommands(t *testing.T) {
	wd := newWatchdog(15 * time.Minute)
	arm := wd.armCommand()
	for _, want := range []string{`d=$(mktemp -d "${TMPDIR:-/tmp}"/nixos-sd-watchdog.XXXXXXXXXX)`, `touch "$hb" && sudo -n sh -c`, "nohup setsid", "shutdown -P now", "-ge 900", "sleep 90"} {
		if !strings.Contains(arm, want) {
			t.Errorf("arm command lacks %q:\n%s", want, arm)
		}
	}
	if got := wd.interval(); got != 3*time.Minute {
		t.Errorf("heartbeat interval = %s, want 3m", got)
	}
	wd.file = "/tmp/nixos-sd-watchdog.0123456789/heartbeat"
	if got := wd.beatCommand(); got != "touch /tmp/nixos-sd-watchdog.0123456789/heartbeat" {
		t.Errorf("beat command = %q", got)
	}
}
