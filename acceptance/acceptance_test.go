// Package acceptance holds the release gate: the README's example built with
// the SDK's acctest package (`packer init`, then `packer build`), against
// real AWS or against the test bed.
//
//   - Real AWS: PACKER_ACC=1 and AWS credentials (as the AWS CLI finds them)
//     and a region; Packer on PATH, the plugin installed (`make install`) or
//     released. Costs a few cents and about ten minutes per test.
//   - Test bed: NIXOS_SD_E2E=1 as `make e2e` sets it (root): moto's EC2, sshd
//     hosts, and `packer init` installs the snapshot release (scripts/snapshot.sh,
//     $NIXOS_SD_SNAPSHOT_DIST) from a stand-in of GitHub's release hosts.
//
// Without either, the tests are skipped and say why.
package acceptance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/hashicorp/packer-plugin-sdk/acctest"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// TestAccMinimalExample builds example/minimal, the README's three-line
// build, and checks the image against its .sha256.
func TestAccMinimalExample(t *testing.T) {
	example := filepath.Join("..", "example", "minimal")
	plugins := readFile(t, filepath.Join(example, "plugins.pkr.hcl"))
	build := readFile(t, filepath.Join(example, "build.pkr.hcl"))
	var snap *testbed.Snapshot
	var release *testbed.ReleaseHost
	switch mode(t) {
	case "aws":
	case "testbed":
		tb := startTestbed(t)
		var err error
		release, snap, err = testbed.StartSnapshotRelease(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = release.Close() })
		useTestbed(t, tb, release)
		// Moto's addresses lead nowhere: SSH goes to the stand-in host.
		host, port := tb.NextSSHEndpoint()
		first, _, _ := strings.Cut(build, "\n")
		build = fmt.Sprintf("%s\n\nbuild {\n  source \"source.nixos-sd.pi\" {\n    ssh_host      = %q\n    ssh_port      = %d\n    public_ip_url = %q\n  }\n}\n",
			first, host, port, tb.PublicIPURL())
	}
	output := "output-pi"
	acctest.TestPlugin(t, &acctest.PluginTestCase{
		Name:     "nixos_sd_minimal_example",
		Init:     true,
		Template: plugins + "\n" + build,
		Type:     "nixos-sd",
		Setup:    func() error { return os.RemoveAll(output) },
		CheckInit: func(cmd *exec.Cmd, logfile string) error {
			if err := exited(cmd, logfile); err != nil {
				return err
			}
			if snap != nil {
				installed := filepath.Join(os.Getenv("PACKER_PLUGIN_PATH"), "github.com", "nixos-sd", "nixos-sd", snap.BinaryName)
				if _, err := os.Stat(installed); err != nil {
					return fmt.Errorf("packer init did not install the snapshot release: %w; release host calls: %v", err, release.Calls())
				}
			}
			return nil
		},
		Check: func(cmd *exec.Cmd, logfile string) error {
			if err := exited(cmd, logfile); err != nil {
				return err
			}
			return checkImage(output)
		},
		Teardown: func() error { return os.RemoveAll(output) },
	})
}

// mode says where the acceptance tests run, or skips the test saying why.
func mode(t *testing.T) string {
	t.Helper()
	if os.Getenv("NIXOS_SD_E2E") != "" {
		return "testbed"
	}
	if os.Getenv(acctest.TestEnvVar) == "" {
		t.Skipf("acceptance tests run against real AWS with %s=1 and AWS credentials (they cost money: see docs/releasing.md), or against the test bed with NIXOS_SD_E2E=1 (make e2e, as root)", acctest.TestEnvVar)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err == nil {
		_, err = cfg.Credentials.Retrieve(ctx)
	}
	if err != nil {
		t.Skipf("%s=1, but no AWS credentials were found (%v); configure them as for the AWS CLI (aws configure, AWS_PROFILE or AWS_ACCESS_KEY_ID) and set a region", acctest.TestEnvVar, err)
	}
	if cfg.Region == "" {
		t.Skipf("%s=1, but no AWS region is set; set AWS_REGION or the profile's region", acctest.TestEnvVar)
	}
	if _, err := exec.LookPath("packer"); err != nil {
		t.Fatalf("packer is not on PATH; install it (https://developer.hashicorp.com/packer/install)")
	}
	return "aws"
}

// exited fails unless the command ran and exited 0.
func exited(cmd *exec.Cmd, logfile string) error {
	if cmd.ProcessState == nil {
		return fmt.Errorf("%s did not run; its log: %s", strings.Join(cmd.Args, " "), logfile)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("%s exited %d; its log: %s", strings.Join(cmd.Args, " "), code, logfile)
	}
	return nil
}

// checkImage checks that dir holds one image, matching its .sha256.
func checkImage(dir string) error {
	images, _ := filepath.Glob(filepath.Join(dir, "*.img"))
	if len(images) != 1 {
		return fmt.Errorf("%s holds %d images (%v), want 1", dir, len(images), images)
	}
	data, err := os.ReadFile(images[0])
	if err != nil {
		return err
	}
	sumFile, err := os.ReadFile(images[0] + ".sha256")
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	if got := strings.Fields(string(sumFile)); len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		return fmt.Errorf("%s.sha256 says %q, the image's SHA-256 is %x", images[0], sumFile, sum)
	}
	return nil
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
