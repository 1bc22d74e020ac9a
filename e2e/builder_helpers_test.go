//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// Helpers of the builder's end-to-end tests (builder_test.go): templates that
// point a nixos-sd source at the test bed, checks of the downloaded image, the
// proxy's call record, and Packer run in the background so a test can act
// while the build runs (terminate the instance, press Ctrl-C).

// bldImageName is the image the test bed's stand-in nix builds (decompressed).
const bldImageName = "nixos-image-sd-card-26.05.20260601.0000000-aarch64-linux.img"

// bldRegion is the test bed's first region, AWS_REGION of tb.Env().
const bldRegion = "us-east-2"

// bldPluginBlock requires the plugin as a user's template does.
const bldPluginBlock = `packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}
`

// bldConnection is the source attributes that reach the next test bed host:
// ssh_host (and ssh_port unless 22) and public_ip_url.
func bldConnection(t testing.TB, tb *testbed.Testbed) string {
	t.Helper()
	host, port := tb.NextSSHEndpoint()
	if host == "" {
		t.Fatal("the test bed has no SSH endpoint for the next instance")
	}
	s := fmt.Sprintf("  ssh_host      = %q\n  public_ip_url = %q\n  nixpkgs_channels_url = %q\n", host, tb.PublicIPURL(), tb.Channels().URL())
	if port != 22 {
		s += fmt.Sprintf("  ssh_port      = %d\n", port)
	}
	return s
}

// bldTemplate is a template with one nixos-sd source called name in
// bldRegion reaching the next test bed host, with extra attributes, and a
// build of it.
func bldTemplate(t testing.TB, tb *testbed.Testbed, name, extra string) string {
	t.Helper()
	return fmt.Sprintf(`%s
source "nixos-sd" %q {
  region        = %q
%s%s
}

build {
  sources = ["source.nixos-sd.%s"]
}
`, bldPluginBlock, name, bldRegion, bldConnection(t, tb), extra, name)
}

// bldBuild runs `packer build -color=false <args> .` in dir against the test
// bed.
func bldBuild(t *testing.T, tb *testbed.Testbed, dir string, args ...string) (string, int) {
	t.Helper()
	all := append([]string{"build", "-color=false"}, args...)
	out, code := packerRun(t, dir, tb.Env(), append(all, ".")...)
	checkBuildReport(t, out)
	return out, code
}

// buildReport is the end of every build's output: the phase table, then the
// cost report (Packer prefixes each line with the build's name).
var buildReport = regexp.MustCompile(`(?m)^==> nixos-sd\.\S+: Phases:\n(.*: +\S.* +\S+\n)+.*: +total +\S+\n==> nixos-sd\.\S+: Cost`)

// checkBuildReport checks that a build the builder ran (its output names the
// build) shows one line per phase and ends with the phase and cost report.
func checkBuildReport(t testing.TB, out string) {
	t.Helper()
	if !strings.Contains(out, "==> nixos-sd.") {
		return // packer rejected the template before the builder ran
	}
	if !strings.Contains(out, ": Phase preflight: ") {
		t.Errorf("the build's output has no line for the preflight phase:\n%s", out)
	}
	if !buildReport.MatchString(out) {
		t.Errorf("the build's output does not end with the phase table and the cost report:\n%s", out)
	}
}

// checkBuiltImage checks the image Packer downloaded: its SHA-256 computed
// here matches its .sha256 file, and its first sector is an MBR with a FAT
// partition (0x0b or 0x0c) and a Linux one (0x83). It returns the SHA-256.
func checkBuiltImage(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the built image: %v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("hashing %s: %v", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	line, err := os.ReadFile(path + ".sha256")
	if err != nil {
		t.Fatalf("the image's checksum file: %v", err)
	}
	if fields := strings.Fields(string(line)); len(fields) != 2 || fields[0] != sum || fields[1] != filepath.Base(path) {
		t.Errorf("%s.sha256 = %q; the image hashes to %s", path, line, sum)
	}
	sector := make([]byte, 512)
	if _, err := f.ReadAt(sector, 0); err != nil {
		t.Fatalf("reading the first sector of %s: %v", path, err)
	}
	if sector[510] != 0x55 || sector[511] != 0xaa {
		t.Errorf("%s has no MBR signature (bytes 510-511 = %x)", path, sector[510:512])
	}
	if p1, p2 := sector[446+4], sector[462+4]; (p1 != 0x0b && p1 != 0x0c) || p2 != 0x83 {
		t.Errorf("%s: partition types %02x and %02x, want 0b or 0c (FAT32) and 83 (Linux)", path, p1, p2)
	}
	return sum
}

// onlyCall is the one call of action in the record; the test fails unless
// there is exactly one.
func onlyCall(t *testing.T, tb *testbed.Testbed, action string) testbed.Call {
	t.Helper()
	calls := tb.Proxy().CallsOf(action)
	if len(calls) != 1 {
		t.Fatalf("%d %s calls in the EC2 record, want 1:\n%s", len(calls), action, tb.Proxy().Summary())
	}
	return calls[0]
}

// tagSpecs reads the TagSpecification.N parameters under prefix ("" or
// "LaunchTemplateData."): resource type -> tag key -> value.
func tagSpecs(params map[string]string, prefix string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for i := 1; ; i++ {
		p := fmt.Sprintf("%sTagSpecification.%d.", prefix, i)
		rt, ok := params[p+"ResourceType"]
		if !ok {
			return out
		}
		tags := map[string]string{}
		for j := 1; ; j++ {
			k, ok := params[fmt.Sprintf("%sTag.%d.Key", p, j)]
			if !ok {
				break
			}
			tags[k] = params[fmt.Sprintf("%sTag.%d.Value", p, j)]
		}
		out[rt] = tags
	}
}

// indexedValues lists the values of the parameters prefix.N.suffix, in N order.
func indexedValues(params map[string]string, prefix, suffix string) []string {
	type kv struct {
		n int
		v string
	}
	var found []kv
	for k, v := range params {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		num, tail, ok := strings.Cut(rest, ".")
		if !ok || tail != suffix {
			continue
		}
		n, err := strconv.Atoi(num)
		if err != nil {
			continue
		}
		found = append(found, kv{n, v})
	}
	sort.Slice(found, func(i, j int) bool { return found[i].n < found[j].n })
	out := make([]string, len(found))
	for i, f := range found {
		out[i] = f.v
	}
	return out
}

// formatParams renders a call's parameters one per line, for messages.
func formatParams(c testbed.Call) string {
	keys := make([]string, 0, len(c.Params))
	for k := range c.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s=%s\n", k, c.Params[k])
	}
	return b.String()
}

// lockedBuffer is an io.Writer safe for Packer's stdout and stderr at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// bgPacker is Packer running in the background in its own process group, so
// a test can act while it builds and send it the terminal's Ctrl-C.
type bgPacker struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
	keys io.WriteCloser // the terminal's keyboard (startPackerOnTerminal)
}

// startPacker starts `packer build -color=false <extra> .` in dir against
// the test bed. The test's cleanup kills whatever of it is left and, when the
// test failed, logs its output.
func startPacker(t *testing.T, tb *testbed.Testbed, dir string, extra ...string) *bgPacker {
	t.Helper()
	name, args := withTestbedHosts(tb.Env(), packerBin, append(append([]string{"build", "-color=false"}, extra...), "."))
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(baseEnv(), tb.Env()...)
	p := &bgPacker{cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting packer: %v", err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
			select {
			case <-p.done:
			case <-time.After(packerInterruptGrace):
			}
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("packer build output:\n%s", p.out.String())
		}
	})
	return p
}

// interrupt sends SIGINT to Packer's whole process group, as Ctrl-C in a
// terminal does.
func (p *bgPacker) interrupt() error { return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT) }

// exited says whether Packer has ended.
func (p *bgPacker) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to within for Packer to end and returns its output and exit
// code; ok is false when it was still running.
func (p *bgPacker) wait(within time.Duration) (output string, code int, ok bool) {
	select {
	case <-p.done:
	case <-time.After(within):
		return p.out.String(), -1, false
	}
	code = 0
	if p.err != nil {
		code = -1
		if ee, isExit := p.err.(*exec.ExitError); isExit {
			code = ee.ExitCode()
		}
	}
	return p.out.String(), code, true
}

// waitFor polls cond every 100 ms until it holds, Packer ends, or within
// passes; it says whether cond held.
func (p *bgPacker) waitFor(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		if p.exited() {
			return cond()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// slowNix takes the place of a host's stand-in nix: every command but a
// build goes to the stand-in (saved as nix.real), and a build never ends by
// itself; it records starting and being stopped in the host's state dir.
const slowNix = `#!/bin/bash
case " $* " in
*" build "*) ;;
*) NIXOS_SD_STANDIN_PROG=nix exec "$(dirname "$(readlink -f "$0")")/nix.real" "$@" ;;
esac
trap 'echo stopped >/var/lib/nixos-sd-standin/slow-nix-term; exit 143' TERM
echo "building '/nix/store/0000-slow-sd-image.drv'..." >&2
touch /var/lib/nixos-sd-standin/slow-nix-started
sleep 600 &
wait
`

// useSlowNix makes the builds of the host in hostDir slow (slowNix) and
// returns the paths of its started and stopped markers.
func useSlowNix(t *testing.T, hostDir string) (started, stopped string) {
	t.Helper()
	nix := filepath.Join(hostDir, "bin", "nix")
	if err := os.Rename(nix, nix+".real"); err != nil {
		t.Fatalf("keeping the stand-in nix: %v", err)
	}
	if err := os.WriteFile(nix, []byte(slowNix), 0o755); err != nil {
		t.Fatalf("installing the slow nix: %v", err)
	}
	return slowNixMarkers(hostDir)
}

// slowNixMarkers are the paths of slowNix's started and stopped markers on
// the host in hostDir.
func slowNixMarkers(hostDir string) (started, stopped string) {
	return filepath.Join(hostDir, "state", "slow-nix-started"), filepath.Join(hostDir, "state", "slow-nix-term")
}

// slowBuildHost waits for the build's host to come up, makes its nix builds
// slow and waits until the build runs there. It returns the host (its
// instance id is h.ID) or fails the test.
func slowBuildHost(t *testing.T, tb *testbed.Testbed, p *bgPacker) *testbed.Host {
	t.Helper()
	h := firstHost(t, tb, p)
	started, _ := useSlowNix(t, h.Dir)
	if !p.waitFor(3*time.Minute, func() bool { _, err := os.Stat(started); return err == nil }) {
		t.Fatalf("the build never started nix on host %s", h.ID)
	}
	return h
}

// moto is a direct (unrecorded, unfaulted) client context for test actions.
func motoCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// readManifest reads the manifest beside an image.
func readManifest(t testing.TB, image string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(image + ".json")
	if err != nil {
		t.Fatalf("the image's manifest: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("the manifest %s.json is not JSON: %v\n%s", image, err, b)
	}
	return m
}

// releaseRevision is the git-revision of a release on the test bed's
// channel server.
func releaseRevision(t *testing.T, release string) string {
	t.Helper()
	resp, err := http.Get(release + "/git-revision")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// checkBuilderManifest checks the manifest a builder build wrote: the schema,
// the image and its sums, the nixpkgs release of the default channel the
// test bed's channel server named before the build (release), the instance,
// the phases and the cost.
func checkBuilderManifest(t *testing.T, tb *testbed.Testbed, image, sum, release string) {
	t.Helper()
	m := readManifest(t, image)
	// The price is the spot price in effect in the instance's own zone.
	asked := false
	for _, c := range tb.Proxy().CallsOf("DescribeSpotPriceHistory") {
		asked = asked || (c.Params["AvailabilityZone"] == m["availability_zone"] && c.Params["InstanceType.1"] == m["instance_type"])
	}
	if !asked {
		t.Errorf("no DescribeSpotPriceHistory call for %v in %v:\n%s", m["instance_type"], m["availability_zone"], tb.Proxy().Summary())
	}
	want := map[string]any{
		"schema_version":   float64(1),
		"image":            filepath.Base(image),
		"sha256":           sum,
		"nixpkgs":          "nixos-26.05",
		"nixpkgs_revision": releaseRevision(t, release),
		"nixpkgs_version":  strings.TrimPrefix(path.Base(release), "nixos-"),
		"nixpkgs_url":      release + "/nixexprs.tar.xz",
		"nixpkgs_source":   "channel git-revision before the build",
		"lifecycle":        "spot",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("manifest %s = %v, want %v", k, m[k], v)
		}
	}
	for _, k := range []string{"plugin_version", "compressed_sha256", "config_sha256", "instance_type", "availability_zone", "source_ami", "instance_id", "region"} {
		if s, _ := m[k].(string); s == "" {
			t.Errorf("manifest %s is empty", k)
		}
	}
	if n, _ := m["compressed_size"].(float64); n <= 0 {
		t.Errorf("manifest compressed_size = %v", m["compressed_size"])
	}
	cost, _ := m["cost"].(map[string]any)
	if cost["launched"] != true || cost["instance_type"] != m["instance_type"] || cost["availability_zone"] != m["availability_zone"] ||
		cost["volume_gib"] != float64(30) || cost["instance_seconds"] == nil || cost["estimated_cost_usd"] == nil || cost["price_source"] == "" {
		t.Errorf("manifest cost = %v", m["cost"])
	}
	if p, err := strconv.ParseFloat(fmt.Sprint(m["spot_price"]), 64); err != nil || cost["price_per_hour_usd"] != p || cost["price_source"] != "spot price history" {
		t.Errorf("manifest cost price %v (%v), want the spot price in effect %v", cost["price_per_hour_usd"], cost["price_source"], m["spot_price"])
	}
	phases, _ := m["phases"].([]any)
	var names []string
	for _, p := range phases {
		pm, _ := p.(map[string]any)
		names = append(names, fmt.Sprint(pm["name"]))
	}
	if got := strings.Join(names, ","); got != "preflight,launch,boot,nix setup,build,download,provision,cleanup" {
		t.Errorf("manifest phases = %s", got)
	}
}

// buildExample runs packer build on a copy of the checked-in example against
// the test bed's next host, with the variables vars (NAME=VALUE) besides
// ssh_host and public_ip_url, and fails the test unless the build succeeds.
func buildExample(t *testing.T, tb *testbed.Testbed, vars ...string) (dir, out string) {
	t.Helper()
	dir = t.TempDir()
	copyTree(t, filepath.Join(repoRoot(t), "example"), dir)
	host, port := tb.NextSSHEndpoint()
	if port != 22 {
		t.Fatalf("the next host answers SSH on port %d; the example has no ssh_port variable", port)
	}
	args := []string{"build", "-color=false"}
	for _, v := range vars {
		args = append(args, "-var", v)
	}
	args = append(args, "-var", "ssh_host="+host, "-var", "public_ip_url="+tb.PublicIPURL(), "nixos-sd.pkr.hcl")
	out, code := packerRun(t, dir, tb.Env(), args...)
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	return dir, out
}
