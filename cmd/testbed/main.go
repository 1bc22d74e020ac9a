// Command testbed runs the offline test bed: EC2 emulated by moto behind a
// fault proxy, stand-in hosts with a real sshd for the instances moto starts,
// and a fake public IP service. Nothing is sent to AWS.
//
//	go run ./cmd/testbed demo    # `make demo`: the example build against the test bed
//	go run ./cmd/testbed serve   # start the test bed, print endpoints, wait for Ctrl-C
//
// Both need root (network namespaces) and `make testbed-deps`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

const usage = `usage: testbed demo | serve

  demo   starts the test bed, runs packer init and packer build on a copy of
         example/nixos-sd.pkr.hcl against it (under .cache/demo), then checks
         moto for leaked resources. Exit code: packer's, or 1 on leaks.
         Environment: NIXOS_SD_PACKER (packer binary; default: scripts/packer-bin.sh),
         PACKER_PLUGIN_PATH (where the plugin is installed; make demo sets both).
  serve  starts the test bed, prints its endpoints and the environment to
         export, and runs until Ctrl-C.
`

func main() {
	if len(os.Args) != 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var code int
	switch os.Args[1] {
	case "demo":
		code = demo()
	case "serve":
		code = serve()
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "testbed: unknown command %q\n%s", os.Args[1], usage)
		code = 2
	}
	os.Exit(code)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[testbed] "+format+"\n", args...)
}

const banner = `
================================================================================
 nixos-sd demo: the example build against the LOCAL TEST BED
   - EC2 is emulated by moto %s on 127.0.0.1 (no AWS account, nothing leaves
     this machine); the fault proxy in front of it records every call.
   - The "instance" is a network namespace on this machine running sshd.
   - The NixOS build is a STAND-IN: a fake nix makes a small valid SD image.
     It shows the plugin's workflow, not a real NixOS build.
================================================================================

`

func startTestbed(ctx context.Context, workDir string) (*testbed.Testbed, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the test bed needs root (it creates network namespaces and runs sshd); run as root, e.g. sudo make demo")
	}
	return testbed.Start(ctx, testbed.Options{WorkDir: workDir, Logf: logf})
}

func demo() int {
	root, err := testbed.RepoRoot()
	if err != nil {
		logf("%v", err)
		return 1
	}
	packer, err := packerBinary(root)
	if err != nil {
		logf("%v", err)
		return 1
	}
	demoDir := filepath.Join(root, ".cache", "demo")
	if err := os.RemoveAll(demoDir); err != nil {
		logf("cleaning %s: %v", demoDir, err)
		return 1
	}
	exampleDir := filepath.Join(demoDir, "example")
	if err := copyDir(filepath.Join(root, "example"), exampleDir); err != nil {
		logf("copying the example: %v", err)
		return 1
	}
	template := "nixos-sd.pkr.hcl"

	// Ctrl-C reaches packer too (same process group); we wait for it, then
	// check leaks and stop the test bed.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	ctx := context.Background()

	fmt.Printf(banner, testbed.MotoVersion)
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	tb, err := startTestbed(startCtx, filepath.Join(demoDir, "testbed"))
	cancel()
	if err != nil {
		logf("starting the test bed: %v", err)
		return 1
	}
	defer tb.Close()

	host, port := tb.NextSSHEndpoint()
	vars := []string{
		"-var", "region=us-east-2",
		"-var", "ssh_host=" + host,
		"-var", "public_ip_url=" + tb.PublicIPURL(),
	}
	hasPortVar, err := declaresVariable(filepath.Join(exampleDir, template), "ssh_port")
	if err != nil {
		logf("%v", err)
		return 1
	}
	if hasPortVar {
		vars = append(vars, "-var", fmt.Sprintf("ssh_port=%d", port))
	} else if port != 22 {
		logf("the next host listens on port %d but the example has no ssh_port variable; the build will not reach it", port)
	}
	fmt.Printf("EC2 endpoint (fault proxy): %s\nPublic IP service: %s (answers %s)\nNext instance's SSH endpoint: %s:%d\nWorking copy of the example: %s\n\n",
		tb.EC2Endpoint(), tb.PublicIPURL(), tb.PublicIP(), host, port, exampleDir)

	env := append(tb.CommandEnv(), "CHECKPOINT_DISABLE=1")
	if os.Getenv("PACKER_PLUGIN_PATH") == "" {
		logf("PACKER_PLUGIN_PATH is not set; packer looks for the plugin in its default folder (make demo sets it)")
	}
	runPacker := func(args ...string) int {
		fmt.Printf("$ packer %s\n", strings.Join(args, " "))
		cmd := exec.Command(packer, args...)
		cmd.Dir = exampleDir
		cmd.Env = env
		cmd.Stdin = nil
		cmd.Stdout = os.Stdout
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return exit.ExitCode()
			}
			logf("running packer: %v", err)
			return 1
		}
		return 0
	}
	code := runPacker("init", template)
	if code == 0 {
		code = runPacker(append(append([]string{"build"}, vars...), template)...)
	}

	fmt.Println()
	leakCtx, cancel := context.WithTimeout(ctx, time.Minute)
	leaks, err := tb.Leaks(leakCtx)
	cancel()
	switch {
	case err != nil:
		logf("checking moto for leaked resources: %v", err)
		code = max(code, 1)
	case len(leaks) > 0:
		fmt.Printf("LEAKS: the build left %d resource(s) in moto:\n  %s\n", len(leaks), strings.Join(leaks, "\n  "))
		code = max(code, 1)
	default:
		fmt.Printf("Leak check: nothing left in moto (%s).\n", strings.Join(tb.Regions(), ", "))
	}
	printOutputs(filepath.Join(exampleDir, "output-rpi"))
	if code != 0 {
		fmt.Printf("\nThe test bed's logs:\n")
		tb.DumpLogs(os.Stdout)
		fmt.Printf("\ndemo: FAILED (exit %d)\n", code)
	} else {
		fmt.Printf("\ndemo: OK\n")
	}
	return code
}

func printOutputs(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		fmt.Printf("No image: %s does not exist.\n", dir)
		return
	}
	fmt.Printf("Output in %s:\n", dir)
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		fmt.Printf("  %-70s %10d bytes\n", e.Name(), info.Size())
	}
}

var variableBlock = regexp.MustCompile(`(?m)^\s*variable\s+"([^"]+)"`)

func declaresVariable(path, name string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	for _, m := range variableBlock.FindAllStringSubmatch(string(data), -1) {
		if m[1] == name {
			return true, nil
		}
	}
	return false, nil
}

func packerBinary(root string) (string, error) {
	if p := os.Getenv("NIXOS_SD_PACKER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("NIXOS_SD_PACKER=%s: %v", p, err)
		}
		return p, nil
	}
	out, err := exec.Command(filepath.Join(root, "scripts", "packer-bin.sh")).Output()
	if err != nil {
		return "", fmt.Errorf("finding packer with scripts/packer-bin.sh: %v (or set NIXOS_SD_PACKER)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// copyDir copies regular files and folders (the example has nothing else).
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), "output-") || d.Name() == "packer_cache" {
				return filepath.SkipDir
			}
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}

func serve() int {
	root, err := testbed.RepoRoot()
	if err != nil {
		logf("%v", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tb, err := startTestbed(ctx, filepath.Join(root, ".cache", "testbed-serve"))
	if err != nil {
		logf("starting the test bed: %v", err)
		return 1
	}
	defer tb.Close()
	host, port := tb.NextSSHEndpoint()
	fmt.Printf(`Test bed running (EC2 emulated by moto %s; instances are local sshd hosts with a stand-in nix).
  EC2 endpoint (fault proxy): %s
  moto itself:                %s
  public IP service:          %s (answers %s)
  next instance's SSH:        %s:%d
  work dir (moto.log):        %s

Export this in your shell (and unset AWS_PROFILE / AWS_SESSION_TOKEN):
`, testbed.MotoVersion, tb.EC2Endpoint(), tb.MotoEndpoint(), tb.PublicIPURL(), tb.PublicIP(), host, port, tb.WorkDir())
	for _, kv := range tb.Env() {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Printf("  export %s=%q\n", k, v)
	}
	fmt.Printf("\nPacker variables: -var ssh_host=%s -var public_ip_url=%s\nCtrl-C stops it.\n", host, tb.PublicIPURL())
	<-ctx.Done()
	fmt.Println()
	if leaks, err := tb.Leaks(context.Background()); err == nil && len(leaks) > 0 {
		fmt.Printf("Left in moto at exit:\n  %s\n", strings.Join(leaks, "\n  "))
	}
	logf("stopping")
	return 0
}
