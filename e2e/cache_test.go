//go:build e2e

package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// The binary cache (the `cache` block) against the test bed's S3 (moto,
// reached by the public S3 endpoint's name) with the stand-in image's probe,
// a real derivation the hosts' real Nix builds in 3 s.

const (
	cacheBucket = "nixos-sd-e2e-cache"
	// probeBuilt is the summary line of Nix starting the probe's builder
	// (its own output goes to the build log only).
	probeBuilt = "nix: building nixos-sd-testbed-probe"
)

// cacheKey writes a Nix secret key file and returns its path and the
// key's text (which must never reach an instance).
func cacheKey(t testing.TB, dir, name string) (string, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	text := name + ":" + base64.StdEncoding.EncodeToString(priv)
	file := filepath.Join(dir, name+".sec")
	if err := os.WriteFile(file, []byte(text+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return file, text
}

// cacheEnv is the test bed's environment with credentials of their own (so
// that the secret can be looked for on the hosts) and the S3 name reached
// directly.
func cacheEnv(tb *testbed.Testbed, secret string) []string {
	env := append(tb.Env(), "AWS_ACCESS_KEY_ID=AKIANIXOSSDCACHETEST", "AWS_SECRET_ACCESS_KEY="+secret)
	for _, kv := range baseEnv() {
		if v, ok := strings.CutPrefix(kv, "NO_PROXY="); ok {
			env = append(env, "NO_PROXY="+v+",s3."+bldRegion+".amazonaws.com")
		}
	}
	return env
}

func cacheBlock(tb *testbed.Testbed, keyFile, extra string) string {
	return fmt.Sprintf("  cache {\n    s3_bucket        = %q\n    endpoint         = %q\n    signing_key_file = %q\n%s  }\n",
		cacheBucket, tb.S3Endpoint(), keyFile, extra)
}

var phaseLine = regexp.MustCompile(`(?m):\s+(build|cache pull|cache push)\s+([0-9.]+(?:ms|s|m)[0-9.]*s?)\s*$`)

// phaseTimes reads the phase table of a build's output.
func phaseTimes(out string) map[string]time.Duration {
	m := map[string]time.Duration{}
	for _, g := range phaseLine.FindAllStringSubmatch(out, -1) {
		d, err := time.ParseDuration(g[2])
		if err == nil {
			m[g[1]] = d
		}
	}
	return m
}

// cacheTestbed starts a test bed whose stand-in builds the probe, with the
// cache's bucket, a signing key and credentials of their own.
func cacheTestbed(t testing.TB) (tb *testbed.Testbed, env []string, keyFile, keyText, secret string) {
	t.Helper()
	tb = startTestbed(t, testbed.Options{StandIn: testbed.StandInOptions{BuildInputs: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s3c := tb.S3Client(ctx)
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{
		Bucket:                    aws.String(cacheBucket),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(bldRegion)},
	}); err != nil {
		t.Fatalf("creating the bucket: %v", err)
	}
	keys := t.TempDir()
	keyFile, keyText = cacheKey(t, keys, "e2e-cache-1")
	secret = base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("secret-%d-nixos-sd-cache", time.Now().UnixNano())))
	env = cacheEnv(tb, secret)
	return tb, env, keyFile, keyText, secret
}

// cacheFirstAndSecond runs two builder builds with the cache: the first
// compiles the probe and pushes it, the second, on a new instance,
// substitutes it without running its builder.
func cacheFirstAndSecond(t testing.TB, tb *testbed.Testbed, env []string, keyFile string) (out1, out2 string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s3c := tb.S3Client(ctx)
	// 1. The builder: the first build compiles the probe and pushes it.
	dir1 := t.TempDir()
	writeTemplate(t, dir1, "build.pkr.hcl", bldTemplate(t, tb, "first", cacheBlock(tb, keyFile, "")))
	out1, code := packerRun(t, dir1, env, "build", "-color=false", ".")
	checkBuildReport(t, out1)
	if code != 0 {
		t.Fatalf("the first build exited %d:\n%s", code, out1)
	}
	if !strings.Contains(out1, probeBuilt) || !strings.Contains(out1, "cache: pushed 1 store paths") {
		t.Fatalf("the first build did not build and push the probe:\n%s", out1)
	}
	listed, err := s3c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(cacheBucket)})
	if err != nil {
		t.Fatal(err)
	}
	var objects []string
	for _, o := range listed.Contents {
		objects = append(objects, aws.ToString(o.Key))
	}
	t.Logf("the bucket after the first build: %q", objects)
	if !hasObject(objects, `^nix-cache-info$`) || !hasObject(objects, `^[0-9a-z]{32}\.narinfo$`) || !hasObject(objects, `^nar/[0-9a-z]{52}\.nar\.zst$`) {
		t.Fatalf("the bucket lacks nix-cache-info, a narinfo or a NAR: %q", objects)
	}
	m := readManifest(t, filepath.Join(dir1, "output-first", bldImageName))
	if c, _ := m["cache"].(map[string]any); c == nil || c["url"] != "s3://"+cacheBucket || c["signing_key"] != "e2e-cache-1" || c["pushed_paths"] != 1.0 {
		t.Errorf("the manifest's cache object = %v", m["cache"])
	}

	// 2. A second build on a new instance substitutes the probe.
	dir2 := t.TempDir()
	writeTemplate(t, dir2, "build.pkr.hcl", bldTemplate(t, tb, "second", cacheBlock(tb, keyFile, "")))
	out2, code = packerRun(t, dir2, env, "build", "-color=false", ".")
	checkBuildReport(t, out2)
	if code != 0 {
		t.Fatalf("the second build exited %d:\n%s", code, out2)
	}
	if strings.Contains(out2, probeBuilt) || !strings.Contains(out2, "cache: 1 store paths (") {
		t.Fatalf("the second build did not substitute the probe from the cache:\n%s", out2)
	}
	return out1, out2
}

// TestCache: the first build compiles the probe and pushes it; a second
// build on a new instance substitutes it without running its builder; the
// provisioner does too, leaving neither the AWS secret nor the signing key
// on its host; with a key the cache's signatures do not verify with, the
// build refuses the cached path and compiles it, saying why; with the
// bucket unreachable, the build completes with a warning.
func TestCache(t *testing.T) {
	tb, env, keyFile, keyText, secret := cacheTestbed(t)
	keys := filepath.Dir(keyFile)
	wrongKey, _ := cacheKey(t, keys, "e2e-cache-1-wrong")
	out1, out2 := cacheFirstAndSecond(t, tb, env, keyFile)
	p1, p2 := phaseTimes(out1), phaseTimes(out2)
	t.Logf("build phase: first %s, second %s; cache push added %s to the first, cache pull %s to the second",
		p1["build"], p2["build"], p1["cache push"], p2["cache pull"])
	if p1["cache push"] == 0 || p2["cache pull"] == 0 {
		t.Errorf("the phase tables lack cache pull or cache push: %v, %v", p1, p2)
	}

	// 3. The provisioner substitutes it too, and leaves no secret on its host.
	h := startCacheHost(t, tb, "i-cacheprov")
	dir3 := t.TempDir()
	writeTemplate(t, dir3, "build.pkr.hcl", h.template(cacheBlock(tb, keyFile, "")))
	out3, code := packerRun(t, dir3, env, "build", "-color=false", ".")
	if code != 0 || strings.Contains(out3, probeBuilt) || !strings.Contains(out3, "cache: 1 store paths (") {
		t.Fatalf("the provisioner's build (exit %d) did not substitute the probe:\n%s", code, out3)
	}
	checkNoSecrets(t, h.host, map[string]string{"the AWS secret access key": secret, "the signing key": strings.SplitN(keyText, ":", 2)[1]})

	// 4. A wrong key: the cached probe is refused and built, and the build
	// says why. The host forgets the probe it substituted first.
	if out, err := h.ssh("sudo -n nix-store --delete --ignore-liveness /nix/store/*-nixos-sd-testbed-probe"); err != nil {
		t.Fatalf("deleting the probe on the host: %v\n%s", err, out)
	}
	dir4 := t.TempDir()
	writeTemplate(t, dir4, "build.pkr.hcl", h.template(cacheBlock(tb, wrongKey, "    push = false\n")))
	out4, code := packerRun(t, dir4, env, "build", "-color=false", ".")
	if code != 0 || !strings.Contains(out4, probeBuilt) || !regexp.MustCompile(`cache: refusing /nix/store/\S+-nixos-sd-testbed-probe from s3://`+cacheBucket+`: its signatures \(e2e-cache-1\) do not verify with the trusted keys \(e2e-cache-1-wrong\)`).MatchString(out4) {
		t.Fatalf("with a wrong key the build (exit %d) did not refuse the cached probe, build it and say why:\n%s", code, out4)
	}

	// 5. The bucket unreachable: the build completes with a warning.
	dir5 := t.TempDir()
	closed := strings.TrimSuffix(tb.S3Endpoint(), tb.S3Endpoint()[strings.LastIndex(tb.S3Endpoint(), ":"):]) + ":9"
	block := strings.Replace(cacheBlock(tb, keyFile, ""), tb.S3Endpoint(), closed, 1)
	writeTemplate(t, dir5, "build.pkr.hcl", h.template(block))
	out5, code := packerRun(t, dir5, env, "build", "-color=false", ".")
	if code != 0 || !strings.Contains(out5, "the build runs without the cache") || !strings.Contains(out5, "cache: pushing to s3://"+cacheBucket+" failed") {
		t.Fatalf("with the bucket unreachable the build (exit %d) did not complete with warnings:\n%s", code, out5)
	}
}

func hasObject(keys []string, pattern string) bool {
	re := regexp.MustCompile(pattern)
	for _, k := range keys {
		if re.MatchString(k) {
			return true
		}
	}
	return false
}

// startCacheHost starts a host of the test bed (its S3 names, the probe)
// outside EC2, for the provisioner.
func startCacheHost(t *testing.T, tb *testbed.Testbed, id string) *provHost {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nixos-sd-e2e", "-f", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(keyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := tb.Hosts().Start(ctx, id, []string{strings.TrimSpace(string(pub))})
	if err != nil {
		t.Fatalf("starting host %s: %v", id, err)
	}
	return &provHost{host: h, keyFile: keyFile, pubKey: strings.TrimSpace(string(pub))}
}

// checkNoSecrets looks for each secret in the files the host wrote (its
// overlay's upper layer, home, /tmp, state) and in its processes'
// environments and command lines.
func checkNoSecrets(t *testing.T, h *testbed.Host, secrets map[string]string) {
	t.Helper()
	scanned := 0
	for _, sub := range []string{"upper", "home", "tmp", "state"} {
		filepath.WalkDir(filepath.Join(h.Dir, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			scanned++
			for what, s := range secrets {
				if strings.Contains(string(b), s) {
					t.Errorf("%s is on the host, in %s", what, p)
				}
			}
			return nil
		})
	}
	out, err := exec.Command("ip", "netns", "pids", h.Namespace).Output()
	if err != nil {
		t.Fatalf("listing the host's processes: %v", err)
	}
	pids := strings.Fields(string(out))
	for _, pid := range pids {
		for _, f := range []string{"environ", "cmdline"} {
			b, err := os.ReadFile(filepath.Join("/proc", pid, f))
			if err != nil {
				continue
			}
			for what, s := range secrets {
				if strings.Contains(string(b), s) {
					t.Errorf("%s is in the %s of process %s on the host", what, f, pid)
				}
			}
		}
	}
	if scanned == 0 || len(pids) == 0 {
		t.Fatalf("nothing was scanned on the host (%d files, %d processes)", scanned, len(pids))
	}
	t.Logf("no secret in %d files and %d processes of the host", scanned, len(pids))
}

// ssh runs a command on the host as admin.
func (p *provHost) ssh(command string) (string, error) {
	out, err := exec.Command("ssh", "-i", p.keyFile, "-p", fmt.Sprint(p.host.Port), "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "admin@"+p.host.Addr, command).CombinedOutput()
	return string(out), err
}

// BenchmarkCache (make bench-e2e): the build phase of a build whose probe
// (a real derivation that sleeps 3 s) comes from the cache against the
// build that compiled it, and the time the push and the pull add.
func BenchmarkCache(b *testing.B) {
	for range b.N {
		tb, env, keyFile, _, _ := cacheTestbed(b)
		out1, out2 := cacheFirstAndSecond(b, tb, env, keyFile)
		p1, p2 := phaseTimes(out1), phaseTimes(out2)
		b.ReportMetric(p1["build"].Seconds(), "build-first-s")
		b.ReportMetric(p2["build"].Seconds(), "build-second-s")
		b.ReportMetric(p1["cache push"].Seconds(), "push-s")
		b.ReportMetric(p2["cache pull"].Seconds(), "pull-setup-s")
	}
}
