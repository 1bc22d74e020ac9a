//go:build e2e

// Package e2e holds the end-to-end tests: the real Packer binary runs the
// installed plugin against the local test bed (moto's EC2 API behind a fault
// proxy, sshd stand-in hosts in network namespaces, a stand-in nix). Run them
// with `make e2e`, which builds and installs the plugin and sets the
// environment this harness checks. They need root.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// packerTimeout bounds one Packer run. A run that takes longer is stopped
// (interrupt first, so Packer cleans up, then kill) and the test fails.
const packerTimeout = 15 * time.Minute

// packerInterruptGrace is how long an interrupted Packer gets to clean up
// before it and its plugins are killed.
const packerInterruptGrace = 2 * time.Minute

// pluginAddress is the plugin's source address, as in required_plugins.
const pluginAddress = "github.com/nixos-sd/nixos-sd"

var (
	// packerBin is the real Packer binary (NIXOS_SD_PACKER).
	packerBin string
	// pluginBin is the freshly built plugin (NIXOS_SD_PLUGIN).
	pluginBin string
	// pluginPath is the private plugin folder the plugin is installed in
	// (PACKER_PLUGIN_PATH).
	pluginPath string
)

// TestMain refuses to run (fails, never skips) without what the suite needs:
// a skipped end-to-end test proves nothing.
func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) != "" {
		// The benchmark's engine process (download_bench_test.go).
		os.Exit(benchChild())
	}
	if err := checkPrerequisites(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		fmt.Fprintln(os.Stderr, "e2e: run the suite with `make e2e` (as root): it builds and installs the plugin and sets NIXOS_SD_PACKER, NIXOS_SD_PLUGIN and PACKER_PLUGIN_PATH")
		os.Exit(2)
	}
	os.Exit(checkIAMPolicy(m.Run()))
}

func checkPrerequisites() error {
	var problems []string
	if os.Geteuid() != 0 {
		problems = append(problems, fmt.Sprintf("not running as root (uid %d); the test bed creates network namespaces and sshd hosts", os.Geteuid()))
	}
	packerBin = os.Getenv("NIXOS_SD_PACKER")
	pluginBin = os.Getenv("NIXOS_SD_PLUGIN")
	pluginPath = os.Getenv("PACKER_PLUGIN_PATH")
	if packerBin == "" {
		problems = append(problems, "NIXOS_SD_PACKER is not set; set it to the Packer binary (scripts/packer-bin.sh prints its path)")
	} else if err := isExecutable(packerBin); err != nil {
		problems = append(problems, fmt.Sprintf("NIXOS_SD_PACKER=%s: %v", packerBin, err))
	}
	if pluginBin == "" {
		problems = append(problems, "NIXOS_SD_PLUGIN is not set; set it to the built plugin binary (make build writes ./packer-plugin-nixos-sd)")
	} else if err := isExecutable(pluginBin); err != nil {
		problems = append(problems, fmt.Sprintf("NIXOS_SD_PLUGIN=%s: %v", pluginBin, err))
	}
	if pluginPath == "" {
		problems = append(problems, "PACKER_PLUGIN_PATH is not set; set it to the private plugin folder the plugin is installed in (make e2e uses .cache/packer-plugins), never your own")
	} else if st, err := os.Stat(pluginPath); err != nil || !st.IsDir() {
		problems = append(problems, fmt.Sprintf("PACKER_PLUGIN_PATH=%s is not a directory; install the plugin there: packer plugins install --path %s %s", pluginPath, orDefault(pluginBin, "./packer-plugin-nixos-sd"), pluginAddress))
	}
	if len(problems) == 0 {
		if err := checkInstalled(pluginBin, pluginPath); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return errors.New("prerequisites missing:\n  - " + strings.Join(problems, "\n  - "))
	}
	// Absolute paths: tests run Packer from other directories.
	for _, p := range []*string{&packerBin, &pluginBin, &pluginPath} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	return nil
}

// checkInstalled makes sure the plugin Packer will load is the one just built,
// so that a stale install never passes for the code under test.
func checkInstalled(bin, path string) error {
	want, err := fileSHA256(bin)
	if err != nil {
		return fmt.Errorf("NIXOS_SD_PLUGIN: %v", err)
	}
	dir := filepath.Join(path, filepath.FromSlash(pluginAddress))
	installed, _ := filepath.Glob(filepath.Join(dir, "packer-plugin-nixos-sd_*"))
	for _, f := range installed {
		if strings.HasSuffix(f, "_SHA256SUM") {
			continue
		}
		if got, err := fileSHA256(f); err == nil && got == want {
			return nil
		}
	}
	return fmt.Errorf("the plugin installed in %s is not %s (installed: %d file(s)); install it: PACKER_PLUGIN_PATH=%s packer plugins install --path %s %s",
		dir, bin, len(installed), path, bin, pluginAddress)
}

func fileSHA256(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

func isExecutable(name string) error {
	st, err := os.Stat(name)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("not an executable file")
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// blackhole is a local address nothing listens on: proxies and AWS endpoints
// point there by default so that a test that forgets to set them fails fast
// instead of reaching the internet or real AWS.
const blackhole = "http://127.0.0.1:9"

// baseEnv is the environment every Packer run starts from: this process's,
// minus Packer logging, AWS settings and proxies, plus guards.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PACKER_LOG", k == "PACKER_LOG_PATH", k == "CHECKPOINT_DISABLE", k == "PACKER_PLUGIN_PATH",
			strings.HasPrefix(k, "AWS_"),
			strings.EqualFold(k, "HTTP_PROXY"), strings.EqualFold(k, "HTTPS_PROXY"), strings.EqualFold(k, "NO_PROXY"), strings.EqualFold(k, "ALL_PROXY"):
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"CHECKPOINT_DISABLE=1",
		"PACKER_PLUGIN_PATH="+pluginPath,
		// No real AWS: every AWS SDK call goes to a dead local port unless the
		// test bed's environment (AWS_ENDPOINT_URL_EC2) or ec2_endpoint says
		// otherwise, and no credentials or profile of the machine's are used.
		"AWS_ENDPOINT_URL="+blackhole,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		// No internet over HTTP(S): only loopback and private addresses (the
		// test bed's) are reached directly.
		"HTTP_PROXY="+blackhole,
		"HTTPS_PROXY="+blackhole,
		"NO_PROXY=localhost,127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,100.64.0.0/10",
	)
}

// packerRun runs the real Packer with args in dir and returns its combined
// stdout and stderr and its exit code. env entries (KEY=value) are added last
// and so win over the defaults: CHECKPOINT_DISABLE=1, PACKER_PLUGIN_PATH set to
// the private plugin folder, PACKER_LOG unset, AWS endpoints and HTTP(S)
// proxies pointing at a dead local port. Output is plain (pass
// -machine-readable yourself if a test needs it). The run is bounded by 15
// minutes; at the deadline Packer is interrupted (so it cleans up), then
// killed with its plugins, and the test fails. The output is logged when the
// test fails. Set NIXOS_SD_E2E_PACKER_LOG=1 to have Packer's debug log written
// to a file and logged on failure too.
func packerRun(t testing.TB, dir string, env []string, args ...string) (output string, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), packerTimeout)
	defer cancel()

	name, args := withTestbedHosts(env, packerBin, args)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(baseEnv(), env...)
	var logFile string
	if os.Getenv("NIXOS_SD_E2E_PACKER_LOG") != "" {
		logFile = filepath.Join(t.TempDir(), "packer.log")
		cmd.Env = append(cmd.Env, "PACKER_LOG=1", "PACKER_LOG_PATH="+logFile)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// Its own process group, so that the plugins it starts can be stopped with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = packerInterruptGrace

	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start).Round(time.Millisecond)
	if cmd.Process != nil {
		// Whatever Packer left behind in its group (plugins) goes with it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	output = out.String()
	exitCode = 0
	if err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			t.Fatalf("running %s %s: %v\n%s", packerBin, strings.Join(args, " "), err, output)
		}
		exitCode = exitErr.ExitCode()
	}
	if ctx.Err() != nil {
		t.Errorf("packer %s did not finish within %s; it was interrupted (exit %d)", strings.Join(args, " "), packerTimeout, exitCode)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("packer %s (in %s, exit %d, %s):\n%s", strings.Join(args, " "), dir, exitCode, elapsed, output)
		if logFile != "" {
			if b, err := os.ReadFile(logFile); err == nil {
				t.Logf("PACKER_LOG of packer %s:\n%s", strings.Join(args, " "), b)
			}
		}
	})
	return output, exitCode
}

// withTestbedHosts runs the program in a mount namespace of its own where
// the test bed's hosts file (NIXOS_SD_TESTBED_HOSTS in env) is /etc/hosts, so
// the instances' DNS names resolve as AWS's DNS answers them. unshare and sh
// exec, so the program keeps the pid (signals reach it).
func withTestbedHosts(env []string, name string, args []string) (string, []string) {
	hosts := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "NIXOS_SD_TESTBED_HOSTS="); ok {
			hosts = v
		}
	}
	if hosts == "" {
		return name, args
	}
	return "unshare", append([]string{"--mount", "--propagation", "private", "--", "sh", "-c",
		`mount --bind "$0" /etc/hosts && exec "$@"`, hosts, name}, args...)
}

// writeTemplate writes content to dir/name and returns the file's path.
func writeTemplate(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatalf("writeTemplate: %v", err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatalf("writeTemplate: %v", err)
	}
	return p
}

// repoRoot is the repository's root directory (the one holding go.mod).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("repoRoot: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("repoRoot: no go.mod above the working directory")
		}
		dir = parent
	}
}

// copyTree copies the directory src to dst (created), regular files and
// directories only, so a test can run Packer on a copy of a checked-in tree.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copying %s to %s: %v", src, dst, err)
	}
}

// normalizeSpace collapses every run of white space to one space, so that
// expected messages match however Packer wraps or indents them.
func normalizeSpace(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
