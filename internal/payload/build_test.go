package payload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunReportsBuildFailure(t *testing.T) {
	e := newRunEnv(t, "FAKE_FAIL=1")
	c := e.config(nil)
	_, err := e.run(context.Background(), c)
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseBuild {
		t.Fatalf("want a build error, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"nixos-sd build failed", "exit status 1", "error: builder for '/nix/store/0000-nixos-sd-image.drv' failed with exit code 1"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error lacks %q:\n%s", want, msg)
		}
	}
	// The failure names the log, which the output directory keeps alone and
	// which lets the next build use the directory without -force.
	logFile := filepath.Join(e.out, BuildLogName)
	if !strings.Contains(msg, "everything the build host printed is in "+logFile) {
		t.Errorf("the error does not name the build log:\n%s", msg)
	}
	e.outputHolds()
	if _, err := os.Stat(e.remote); !os.IsNotExist(err) {
		t.Errorf("the remote directory was left after a failure: %v", err)
	}
	again := Config{OutputDirectory: e.out}
	if errs := again.Prepare("rpi", false); len(errs) != 0 {
		t.Errorf("an output directory holding only the build log was refused: %v", errs)
	}
	os.WriteFile(filepath.Join(e.out, "other"), nil, 0o644)
	if errs := again.Prepare("rpi", false); len(errs) != 1 || !strings.Contains(errs[0].Error(), "already exists") {
		t.Errorf("an output directory holding more than the log: errors %v", errs)
	}
}

func TestRunStopsTheBuildOnCancel(t *testing.T) {
	e := newRunEnv(t, "FAKE_SLEEP=60")
	c := e.config(nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for i := 0; i < 200; i++ {
			if _, err := os.Stat(filepath.Join(e.remote, "build.pid")); err == nil {
				time.Sleep(300 * time.Millisecond)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	_, err := e.run(ctx, c)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want the cancellation, got %v", err)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("Run took %s to return after cancellation", el)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(e.term); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the remote build was not stopped:\n%s", e.ui.all())
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.outputHolds()
}
