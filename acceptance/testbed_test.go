package acceptance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// blackhole is a dead local port: plain HTTP goes nowhere unless it is to
// the test bed's own addresses.
const blackhole = "http://127.0.0.1:9"

// startTestbed starts the test bed and, at the end, checks that the build
// left nothing in EC2.
func startTestbed(t *testing.T) *testbed.Testbed {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("the test bed needs root (network namespaces, sshd hosts); run `make e2e` as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var progress strings.Builder
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(&progress, format+"\n", args...)
	}
	tb, err := testbed.Start(ctx, testbed.Options{WorkDir: t.TempDir(), Logf: logf})
	if err != nil {
		t.Fatalf("starting the test bed: %v\n%s", err, progress.String())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if leaks, err := tb.Leaks(ctx); err != nil || len(leaks) > 0 {
			t.Errorf("the build left resources in EC2 (%v): %v", err, leaks)
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("test bed progress:\n%s", progress.String())
			mu.Unlock()
			var b strings.Builder
			tb.DumpLogs(&b)
			t.Logf("test bed logs:\n%s", b.String())
		}
		if err := tb.Close(); err != nil {
			t.Errorf("closing the test bed: %v", err)
		}
	})
	return tb
}

// useTestbed points this process's environment, which acctest hands to
// Packer, at the test bed and the release stand-in: no AWS settings of the
// machine, a fresh plugin folder, a home with one public key, the Packer
// binary `make e2e` uses first on PATH.
func useTestbed(t *testing.T, tb *testbed.Testbed, release *testbed.ReleaseHost) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || k == "SSH_AUTH_SOCK" {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	packer := os.Getenv("NIXOS_SD_PACKER")
	if packer == "" {
		t.Fatal("NIXOS_SD_PACKER is not set; set it to the Packer binary (scripts/packer-bin.sh prints its path), as `make e2e` does")
	}
	home := t.TempDir()
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl pi-owner@laptop\n"
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519.pub"), []byte(key), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(tb.Env(), release.Env()...)
	env = append(env,
		"HOME="+home,
		"PATH="+filepath.Dir(packer)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"PACKER_PLUGIN_PATH="+t.TempDir(),
		"CHECKPOINT_DISABLE=1",
		"HTTP_PROXY="+blackhole,
		"NO_PROXY=localhost,127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,100.64.0.0/10",
		"PACKER_ACC=1",
	)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}
